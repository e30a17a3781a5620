{#- What differs between the two warehouses the tap loads. target-duckdb keeps Stripe's
    nested objects and lists as JSON columns; target-postgres keeps objects as jsonb and
    lists as jsonb[] arrays. -#}

{#- The text at `path` (a list of keys) inside a JSON object column. -#}
{% macro json_text(column, path) -%}
  {{ return(adapter.dispatch('json_text', 'stripe_analytics')(column, path)) }}
{%- endmacro %}

{% macro default__json_text(column, path) -%}
  ({{ column }} #>> '{{ "{" ~ (path | join(",")) ~ "}" }}')
{%- endmacro %}

{% macro duckdb__json_text(column, path) -%}
  json_extract_string({{ column }}, '$.{{ path | join(".") }}')
{%- endmacro %}

{#- The sum of the integer `key` of every element of a JSON list column; 0 when empty. -#}
{% macro json_list_sum(column, key) -%}
  {{ return(adapter.dispatch('json_list_sum', 'stripe_analytics')(column, key)) }}
{%- endmacro %}

{% macro default__json_list_sum(column, key) -%}
  coalesce((select sum(cast(element ->> '{{ key }}' as bigint)) from unnest({{ column }}) as element), 0)
{%- endmacro %}

{% macro duckdb__json_list_sum(column, key) -%}
  coalesce(list_sum(cast(json_extract_string({{ column }}, '$[*].{{ key }}') as bigint[])), 0)
{%- endmacro %}

{#- An ISO 8601 UTC time held as JSON text ("2025-12-22T11:30:51Z"), as a UTC timestamp. -#}
{% macro iso_timestamp(text) -%}
  cast(rtrim({{ text }}, 'Z') as timestamp)
{%- endmacro %}

{#- The first day of the month of a timestamp or date. -#}
{% macro month_of(value) -%}
  cast(date_trunc('month', {{ value }}) as date)
{%- endmacro %}

{#- `months` (an integer expression) months after the date `value`. -#}
{% macro add_months(value, months) -%}
  {{ return(adapter.dispatch('add_months', 'stripe_analytics')(value, months)) }}
{%- endmacro %}

{% macro default__add_months(value, months) -%}
  cast({{ value }} + ({{ months }}) * interval '1 month' as date)
{%- endmacro %}

{% macro duckdb__add_months(value, months) -%}
  cast({{ value }} + to_months(cast({{ months }} as integer)) as date)
{%- endmacro %}

{#- Whole months from the date `start` to the date `stop`. -#}
{% macro months_between(start, stop) -%}
  cast((extract(year from {{ stop }}) - extract(year from {{ start }})) * 12
       + extract(month from {{ stop }}) - extract(month from {{ start }}) as integer)
{%- endmacro %}

{#- numerator / denominator in the smallest currency unit, with `scale` decimals (the MRR
    of a yearly price is a twelfth of it): the same decimals in both warehouses. -#}
{% macro fraction_amount(numerator, denominator, scale=6) -%}
  cast(round(cast({{ numerator }} as decimal(38, 12)) / ({{ denominator }}), {{ scale }}) as decimal(28, {{ scale }}))
{%- endmacro %}

{#- The rows of a source table that stand for live objects: target-postgres keeps a deleted
    object's row with `_sdc_deleted_at` set; target-duckdb (hard_delete) removes it. -#}
{% macro live(source_name) -%}
  (select * from {{ source('stripe', source_name) }} where _sdc_deleted_at is null) as {{ source_name }}
{%- endmacro %}

{#- Each row of the CTE `rows` (its columns) once for every month from the date `first_month`
    to the date `last_month`, as `month`: the months of a span, even those with no data. -#}
{% macro month_spine(rows, first_month, last_month) -%}
    select {{ rows }}.*, {{ stripe_analytics.add_months(first_month, 'numbers.n') }} as month
    from {{ rows }}
    join {{ stripe_analytics.numbers_0_999() }} as numbers
        on numbers.n <= {{ stripe_analytics.months_between(first_month, last_month) }}
{%- endmacro %}

{#- 0..999, for month spines (no generate_series differences between warehouses). -#}
{% macro numbers_0_999() -%}
  (
    select ones.n + 10 * tens.n + 100 * hundreds.n as n
    from {{ digits() }} as ones
    cross join {{ digits() }} as tens
    cross join {{ digits() }} as hundreds
  )
{%- endmacro %}

{% macro digits() -%}
  (select 0 as n union all select 1 union all select 2 union all select 3 union all select 4
   union all select 5 union all select 6 union all select 7 union all select 8 union all select 9)
{%- endmacro %}
