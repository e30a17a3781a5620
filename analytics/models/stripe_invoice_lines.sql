-- Every line of every invoice, with its invoice's status and customer, its price's
-- interval, and the monthly amount it adds to MRR while its period holds a month's end
-- (see stripe_subscription_item_mrr). Reads tables loaded with API version 2024-06-20
-- (`price`, `type`, `proration`, `subscription_item` on the line) or 2026-10-28.endive
-- (`pricing.price_details.price`, an id whose interval comes from `prices`, and
-- `parent.subscription_item_details`).
{%- set json = 'json' if target.type == 'duckdb' else 'jsonb' %}
with lines as (
    select * from {{ live('invoice_line_items') }}
),
invoices as (
    select invoices.account_id, invoices.id, invoices.status, invoices.created,
           {{ customer_of('invoices', 'invoices') }} as customer
    from {{ live('invoices') }}
),
prices as (
    select account_id, id, product, unit_amount,
           {{ json_text('recurring', ['interval']) }} as recurring_interval,
           cast({{ json_text('recurring', ['interval_count']) }} as integer) as recurring_interval_count
    from {{ live('prices') }}
),
versioned as (
    -- One shape for both API versions: the line's own field where its version has it.
    select
        lines.*,
        {{ column_or_null('invoice_line_items', 'lines', 'type') }} as line_type,
        {{ json_text(column_or_null('invoice_line_items', 'lines', 'parent', json), ['type']) }}
            as parent_type,
        coalesce(
            {{ json_text(column_or_null('invoice_line_items', 'lines', 'price', json), ['id']) }},
            {{ json_text(column_or_null('invoice_line_items', 'lines', 'pricing', json), ['price_details', 'price']) }}
        ) as line_price_id,
        {{ json_text(column_or_null('invoice_line_items', 'lines', 'price', json), ['recurring', 'interval']) }}
            as line_interval,
        cast({{ json_text(column_or_null('invoice_line_items', 'lines', 'price', json), ['recurring', 'interval_count']) }} as integer)
            as line_interval_count,
        cast({{ json_text(column_or_null('invoice_line_items', 'lines', 'price', json), ['unit_amount']) }} as bigint)
            as line_unit_amount,
        {{ json_text(column_or_null('invoice_line_items', 'lines', 'price', json), ['product']) }}
            as line_product_id,
        coalesce(
            {{ column_or_null('invoice_line_items', 'lines', 'subscription') }},
            {{ json_text(column_or_null('invoice_line_items', 'lines', 'parent', json), ['subscription_item_details', 'subscription']) }}
        ) as line_subscription,
        coalesce(
            {{ column_or_null('invoice_line_items', 'lines', 'subscription_item') }},
            {{ json_text(column_or_null('invoice_line_items', 'lines', 'parent', json), ['subscription_item_details', 'subscription_item']) }}
        ) as line_subscription_item,
        coalesce(
            {{ column_or_null('invoice_line_items', 'lines', 'proration', 'boolean') }},
            {{ json_text(column_or_null('invoice_line_items', 'lines', 'parent', json), ['subscription_item_details', 'proration']) }} = 'true',
            false
        ) as line_proration
    from lines
),
shaped as (
    select
        versioned.account_id,
        versioned.id as invoice_line_id,
        versioned.invoice as invoice_id,
        invoices.status as invoice_status,
        invoices.created as invoice_created,
        invoices.customer as customer_id,
        versioned.line_subscription as subscription_id,
        versioned.line_subscription_item as subscription_item_id,
        coalesce(
            versioned.line_type,
            case versioned.parent_type
                when 'subscription_item_details' then 'subscription'
                when 'invoice_item_details' then 'invoiceitem'
            end
        ) as type,
        versioned.line_price_id as price_id,
        coalesce(versioned.line_product_id, prices.product) as product_id,
        coalesce(versioned.line_interval, prices.recurring_interval) as price_interval,
        coalesce(versioned.line_interval_count, prices.recurring_interval_count) as price_interval_count,
        coalesce(versioned.line_unit_amount, prices.unit_amount) as unit_amount,
        versioned.currency,
        versioned.quantity,
        versioned.amount,
        {{ json_list_sum('versioned.discount_amounts', 'amount') }} as discount_amount,
        {{ iso_timestamp(json_text('versioned.period', ['start'])) }} as period_start,
        {{ iso_timestamp(json_text('versioned.period', ['end'])) }} as period_end,
        versioned.line_proration as proration,
        versioned.description
    from versioned
    left join invoices
        on invoices.account_id = versioned.account_id and invoices.id = versioned.invoice
    left join prices
        on prices.account_id = versioned.account_id and prices.id = versioned.line_price_id
),
counted as (
    select
        shaped.*,
        (type = 'subscription' and not proration and invoice_status is not null
         and invoice_status not in ('draft', 'void') and price_interval is not null)
            as counts_for_mrr
    from shaped
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
    unit_amount,
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
    counts_for_mrr,
    case
        when counts_for_mrr
        then {{ monthly('amount - discount_amount', 'price_interval', 'price_interval_count') }}
        else {{ fraction_amount('0', '1') }}
    end as monthly_amount,
    case
        when counts_for_mrr
        then {{ monthly('coalesce(unit_amount, 0) * coalesce(quantity, 0)', 'price_interval', 'price_interval_count') }}
        else {{ fraction_amount('0', '1') }}
    end as contract_monthly_amount
from counted
