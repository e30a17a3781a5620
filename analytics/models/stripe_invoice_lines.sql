-- Every line of every invoice, with its invoice's status and customer, and the monthly
-- amount it adds to MRR (subscription lines of invoices that are neither draft nor void).
with lines as (
    select * from {{ live('invoice_line_items') }}
),
invoices as (
    select account_id, id, status, customer, created from {{ live('invoices') }}
),
shaped as (
    select
        lines.account_id,
        lines.id as invoice_line_id,
        lines.invoice as invoice_id,
        invoices.status as invoice_status,
        invoices.created as invoice_created,
        invoices.customer as customer_id,
        lines.subscription as subscription_id,
        lines.subscription_item as subscription_item_id,
        lines.type,
        {{ json_text('lines.price', ['id']) }} as price_id,
        {{ json_text('lines.price', ['product']) }} as product_id,
        {{ json_text('lines.price', ['recurring', 'interval']) }} as price_interval,
        cast({{ json_text('lines.price', ['recurring', 'interval_count']) }} as integer)
            as price_interval_count,
        lines.currency,
        lines.quantity,
        lines.amount,
        {{ json_list_sum('lines.discount_amounts', 'amount') }} as discount_amount,
        {{ iso_timestamp(json_text('lines.period', ['start'])) }} as period_start,
        {{ iso_timestamp(json_text('lines.period', ['end'])) }} as period_end,
        lines.proration,
        lines.description
    from lines
    left join invoices
        on invoices.account_id = lines.account_id and invoices.id = lines.invoice
)
select
    account_id,
    invoice_line_id,
    invoice_id,
    invoice_status,
    invoice_created,
    customer_id,
    subscription_id,
    subscription_item_id,
    type,
    price_id,
    product_id,
    price_interval,
    price_interval_count,
    currency,
    quantity,
    amount,
    discount_amount,
    amount - discount_amount as amount_after_discounts,
    period_start,
    period_end,
    {{ month_of('period_start') }} as period_month,
    proration,
    description,
    (type = 'subscription' and invoice_status is not null
     and invoice_status not in ('draft', 'void') and price_interval is not null) as counts_for_mrr,
    case
        when type = 'subscription' and invoice_status is not null
             and invoice_status not in ('draft', 'void') and price_interval is not null
        then {{ fraction_amount(
            "(amount - discount_amount) * case price_interval when 'year' then 1 when 'week' then 52 when 'day' then 365 else 12 end",
            "12 * coalesce(price_interval_count, 1)") }}
        else {{ fraction_amount('0', '1') }}
    end as monthly_amount
from shaped
