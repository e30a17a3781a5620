{#- Generic tests of this project (no dbt packages: installs stay offline). -#}

{#- No two rows share the values of `columns` (a model's key). -#}
{% test unique_combination(model, columns) %}
select {{ columns | join(', ') }}, count(*) as rows_with_key
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}

{#- Per account and currency (or `partition_by`), each month's MRR is the previous month's plus new, expansion
    and reactivation, less contraction and churn (and the first month's previous is 0). -#}
{% test mrr_movements_add_up(model, partition_by=['account_id', 'currency']) %}
with ordered as (
    select
        *,
        coalesce(lag(mrr) over (partition by {{ partition_by | join(', ') }} order by month), 0)
            as mrr_before
    from {{ model }}
)
select *
from ordered
where mrr <> mrr_before + new_mrr + expansion_mrr + reactivation_mrr
             - contraction_mrr - churned_mrr
   or previous_mrr <> mrr_before
{% endtest %}
