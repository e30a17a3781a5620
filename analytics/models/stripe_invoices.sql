-- One row per invoice: customer, subscription, status, amounts due, paid and remaining,
-- discounts, tax, number of lines and when it was paid. Reads tables loaded with API
-- version 2024-06-20 (`subscription`, `tax`) or 2026-10-28.endive
-- (`parent.subscription_details.subscription`, `total_taxes`).
{%- set json = 'json' if target.type == 'duckdb' else 'jsonb' %}
with invoices as (
    select * from {{ live('invoices') }}
),
line_counts as (
    select account_id, invoice, count(*) as line_count
    from {{ live('invoice_line_items') }}
    group by 1, 2
)
select
    invoices.account_id,
    invoices.id as invoice_id,
    invoices.number,
    {{ customer_of('invoices', 'invoices') }} as customer_id,
    coalesce(
        {{ column_or_null('invoices', 'invoices', 'subscription') }},
        {{ json_text(column_or_null('invoices', 'invoices', 'parent', json), ['subscription_details', 'subscription']) }}
    ) as subscription_id,
    invoices.status,
    invoices.billing_reason,
    invoices.collection_method,
    invoices.currency,
    invoices.created,
    invoices.due_date,
    {{ iso_timestamp(json_text('invoices.status_transitions', ['paid_at'])) }} as paid_at,
    cast({{ iso_timestamp(json_text('invoices.status_transitions', ['paid_at'])) }} as date) as paid_date,
    invoices.subtotal,
    {{ json_list_sum('invoices.total_discount_amounts', 'amount') }} as discount_amount,
    {% if source_has_column('invoices', 'total_taxes') and source_has_column('invoices', 'tax') -%}
    coalesce(invoices.tax, {{ json_list_sum('invoices.total_taxes', 'amount') }}, 0)
    {%- elif source_has_column('invoices', 'total_taxes') -%}
    {{ json_list_sum('invoices.total_taxes', 'amount') }}
    {%- else -%}
    coalesce({{ column_or_null('invoices', 'invoices', 'tax', 'bigint') }}, 0)
    {%- endif %} as tax,
    invoices.total,
    invoices.amount_due,
    invoices.amount_paid,
    invoices.amount_remaining,
    coalesce(line_counts.line_count, 0) as line_count
from invoices
left join line_counts
    on line_counts.account_id = invoices.account_id and line_counts.invoice = invoices.id
