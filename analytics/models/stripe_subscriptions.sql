-- Each subscription with its items, its list price per month (the items' prices times
-- quantities, normalised to one month, while active or past due) and its MRR in the latest
-- month of its account (stripe_subscription_item_mrr: the one MRR definition).
with subscriptions as (
    select subscriptions.*, {{ customer_of('subscriptions', 'subscriptions') }} as customer_id
    from {{ live('subscriptions') }}
),
latest_month as (
    select account_id, max(month) as month from {{ ref('stripe_mrr_months') }} group by 1
),
current_mrr as (
    select item_mrr.account_id, item_mrr.subscription_id, sum(item_mrr.billed_mrr) as mrr
    from {{ ref('stripe_subscription_item_mrr') }} as item_mrr
    join latest_month
        on latest_month.account_id = item_mrr.account_id and latest_month.month = item_mrr.month
    group by 1, 2
),
items as (
    select
        account_id,
        subscription,
        id,
        quantity,
        {{ json_text('price', ['id']) }} as price_id,
        {{ json_text('price', ['product']) }} as product_id,
        cast({{ json_text('price', ['unit_amount']) }} as bigint) as unit_amount,
        {{ json_text('price', ['recurring', 'interval']) }} as price_interval,
        cast({{ json_text('price', ['recurring', 'interval_count']) }} as integer) as price_interval_count,
        {{ column_or_null('subscription_items', 'subscription_items', 'current_period_start', 'timestamp') }}
            as current_period_start,
        {{ column_or_null('subscription_items', 'subscription_items', 'current_period_end', 'timestamp') }}
            as current_period_end
    from {{ live('subscription_items') }}
),
item_totals as (
    select
        account_id,
        subscription,
        count(*) as item_count,
        sum(coalesce(quantity, 0)) as quantity,
        sum({{ monthly('coalesce(unit_amount, 0) * coalesce(quantity, 0)', 'price_interval', 'price_interval_count') }})
            as items_monthly_amount,
        string_agg(price_id, ',' order by price_id) as price_ids,
        string_agg(distinct product_id, ',' order by product_id) as product_ids,
        min(current_period_start) as current_period_start,
        max(current_period_end) as current_period_end
    from items
    group by 1, 2
)
select
    subscriptions.account_id,
    subscriptions.id as subscription_id,
    subscriptions.customer_id,
    subscriptions.status,
    subscriptions.currency,
    subscriptions.collection_method,
    subscriptions.created,
    subscriptions.start_date,
    -- on the subscription up to API version 2025-03-31, on each item since
    coalesce({{ column_or_null('subscriptions', 'subscriptions', 'current_period_start', 'timestamp') }},
             item_totals.current_period_start) as current_period_start,
    coalesce({{ column_or_null('subscriptions', 'subscriptions', 'current_period_end', 'timestamp') }},
             item_totals.current_period_end) as current_period_end,
    subscriptions.trial_start,
    subscriptions.trial_end,
    subscriptions.cancel_at_period_end,
    subscriptions.canceled_at,
    subscriptions.ended_at,
    coalesce(item_totals.item_count, 0) as item_count,
    coalesce(item_totals.quantity, 0) as quantity,
    item_totals.price_ids,
    item_totals.product_ids,
    cast(case
        when subscriptions.status in ('active', 'past_due')
        then round(coalesce(item_totals.items_monthly_amount, 0), 2)
        else 0
    end as decimal(28, 2)) as monthly_amount,
    cast(round(coalesce(current_mrr.mrr, 0), 2) as decimal(28, 2)) as mrr
from subscriptions
left join item_totals
    on item_totals.account_id = subscriptions.account_id
    and item_totals.subscription = subscriptions.id
left join current_mrr
    on current_mrr.account_id = subscriptions.account_id
    and current_mrr.subscription_id = subscriptions.id
