{#- Stripe's balance reports as loaded by the report streams; an empty relation with the same
    columns when the streams were not loaded (deselected): nothing is then compared. -#}
{% macro report_table(name, columns) -%}
  {%- set relation = source('stripe', name) -%}
  {%- set found = adapter.get_relation(relation.database, relation.schema, relation.identifier) if execute else relation -%}
  {%- if found is none -%}
    (select {% for column, type in columns.items() %}cast(null as {{ type }}) as {{ column }}{{ ", " if not loop.last }}{% endfor %} where 1 = 0) as {{ name }}
  {%- else -%}
    {{ relation }} as {{ name }}
  {%- endif -%}
{%- endmacro %}

{#- A comma-separated list of `column`'s values, in order (both warehouses). -#}
{% macro id_list(column) -%}
  string_agg({{ column }}, ', ' order by {{ column }})
{%- endmacro %}

{#- Fails while any month of `model` differs from Stripe's reports, and names each such
    month, its account, currency, difference and the balance transaction ids in the dbt
    log: the build then exits non-zero. -#}
{% test reconciled_with_stripe(model) %}
{%- set differing -%}
select account_id, month, currency, difference, missing_in_warehouse, missing_in_stripe,
       balance_check
from {{ model }}
where status = 'differs'
order by account_id, month, currency
{%- endset -%}
{%- if execute -%}
  {%- set rows = run_query(differing) -%}
  {%- for row in rows -%}
    {%- do log("Differs from Stripe's balance report: account " ~ row[0] ~ ", month "
               ~ row[1] ~ ", " ~ row[2] ~ ": difference " ~ row[3]
               ~ "; missing in the warehouse: " ~ (row[4] or "none")
               ~ "; missing in Stripe's report: " ~ (row[5] or "none")
               ~ "; balance check: " ~ row[6], info=True) -%}
  {%- endfor -%}
{%- endif -%}
{{ differing }}
{% endtest %}

{#- Fails while any paid automatic payout of `model` (stripe_payouts) differs from what it
    settled, and names each one, its account, amount, settled net and the balance
    transactions Stripe lists for it that the warehouse lacks. -#}
{% test payouts_settled(model) %}
{%- set differing -%}
select account_id, payout_id, currency, amount, settled_net, difference, missing_in_warehouse
from {{ model }}
where status = 'differs'
order by account_id, payout_id
{%- endset -%}
{%- if execute -%}
  {%- set rows = run_query(differing) -%}
  {%- for row in rows -%}
    {%- do log("Payout differs from what it settled: account " ~ row[0] ~ ", payout "
               ~ row[1] ~ ", " ~ row[2] ~ ": amount " ~ row[3] ~ ", settled " ~ row[4]
               ~ " (difference " ~ row[5] ~ "); missing in the warehouse: "
               ~ (row[6] or "none"), info=True) -%}
  {%- endfor -%}
{%- endif -%}
{{ differing }}
{% endtest %}
