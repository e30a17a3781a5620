{#- The one MRR definition's pieces (stripe_invoice_lines, stripe_subscription_item_mrr) and
    what lets the models read tables loaded with either API version. -#}

{#- Whether the source table `source_name` has `column` (a table loaded with an older API
    version, or before a field existed, lacks the newer columns). False while parsing. -#}
{% macro source_has_column(source_name, column) -%}
  {%- if not execute -%}{{ return(false) }}{%- endif -%}
  {%- set relation = adapter.get_relation(
        database=source('stripe', source_name).database,
        schema=source('stripe', source_name).schema,
        identifier=source('stripe', source_name).identifier) -%}
  {%- if relation is none -%}{{ return(false) }}{%- endif -%}
  {%- set names = adapter.get_columns_in_relation(relation) | map(attribute='name') | map('lower') | list -%}
  {{ return(column | lower in names) }}
{%- endmacro %}

{#- `alias.column` when the source table has it, else a typed null. -#}
{% macro column_or_null(source_name, alias, column, type='text') -%}
  {%- if stripe_analytics.source_has_column(source_name, column) -%}
    {{ alias }}.{{ column }}
  {%- else -%}
    cast(null as {{ type }})
  {%- endif -%}
{%- endmacro %}

{#- The customer of a billing object: `customer`, or else `customer_account` (an account
    acting as customer, API 2025-12-15 and later; absent from tables loaded before). -#}
{% macro customer_of(source_name, alias) -%}
  {%- if stripe_analytics.source_has_column(source_name, 'customer_account') -%}
    coalesce({{ alias }}.customer, {{ alias }}.customer_account)
  {%- else -%}
    {{ alias }}.customer
  {%- endif -%}
{%- endmacro %}

{#- An amount per `interval_count` intervals, normalised to one month (month 1, year 1/12,
    week 52/12, day 365/12), six decimals of the smallest currency unit. -#}
{% macro monthly(amount, interval, interval_count) -%}
  {{ stripe_analytics.fraction_amount(
      "(" ~ amount ~ ") * case " ~ interval ~ " when 'year' then 1 when 'week' then 52 when 'day' then 365 else 12 end",
      "12 * coalesce(" ~ interval_count ~ ", 1)") }}
{%- endmacro %}

{#- The last second of the month starting on the date `month` (UTC). -#}
{% macro month_end(month) -%}
  (cast({{ stripe_analytics.add_months(month, 1) }} as timestamp) - interval '1 second')
{%- endmacro %}

{#- A time column of a source table as a UTC timestamp without time zone, whatever the
    session's time zone: a loader that stores `timestamp with time zone` (target-postgres)
    would otherwise give months and days in the session's zone. -#}
{% macro utc(source_name, alias, column) -%}
  {%- set dtype = stripe_analytics.source_column_type(source_name, column) | lower -%}
  {%- if 'with time zone' in dtype or 'timestamptz' in dtype -%}
    {{ return(adapter.dispatch('utc_of_tz', 'stripe_analytics')(alias ~ '.' ~ column)) }}
  {%- else -%}
    {{ return(alias ~ '.' ~ column) }}
  {%- endif -%}
{%- endmacro %}

{% macro default__utc_of_tz(expression) -%}
  ({{ expression }} at time zone 'UTC')
{%- endmacro %}

{% macro duckdb__utc_of_tz(expression) -%}
  timezone('UTC', {{ expression }})
{%- endmacro %}

{#- The data type of a source table's column ('' when absent or while parsing). -#}
{% macro source_column_type(source_name, column) -%}
  {%- if not execute -%}{{ return('') }}{%- endif -%}
  {%- set relation = adapter.get_relation(
        database=source('stripe', source_name).database,
        schema=source('stripe', source_name).schema,
        identifier=source('stripe', source_name).identifier) -%}
  {%- if relation is none -%}{{ return('') }}{%- endif -%}
  {%- for col in adapter.get_columns_in_relation(relation) -%}
    {%- if col.name | lower == column | lower -%}{{ return(col.data_type) }}{%- endif -%}
  {%- endfor -%}
  {{ return('') }}
{%- endmacro %}


{#- The movement of an MRR figure from one month to the next: `previous` and `current` are
    the two months' MRR, `month_number` the month's place in its series (1: the first).
    One definition for every model that reports movements. -#}
{% macro mrr_movement(previous, current, month_number) -%}
    case
        when {{ previous }} = 0 and {{ current }} > 0 and {{ month_number }} = 1 then 'new'
        when {{ previous }} = 0 and {{ current }} > 0 then 'reactivation'
        when {{ previous }} > 0 and {{ current }} > {{ previous }} then 'expansion'
        when {{ previous }} > 0 and {{ current }} > 0 and {{ current }} < {{ previous }} then 'contraction'
        when {{ previous }} > 0 and {{ current }} = 0 then 'churned'
        when {{ current }} > 0 then 'unchanged'
        else 'inactive'
    end
{%- endmacro %}
