-- One row per customer and month (UTC), from the customer's first month with MRR to the
-- latest month of its account (so that a month at 0 after MRR shows as churn): the
-- month's MRR (the sum of its items' billed MRR in stripe_subscription_item_mrr), the
-- previous month's, and the movement between them. Currencies are never added together.
with item_mrr as (
    select account_id, currency, customer_id, month, sum(billed_mrr) as mrr
    from {{ ref('stripe_subscription_item_mrr') }}
    group by 1, 2, 3, 4
),
paying as (
    select account_id, currency, customer_id, month,
           cast(round(mrr, 2) as decimal(28, 2)) as mrr
    from item_mrr
    where mrr > 0
),
report_end as (
    select account_id, max(month) as last_month
    from {{ ref('stripe_mrr_months') }}
    group by 1
),
customer_span as (
    select paying.account_id, paying.currency, paying.customer_id,
           min(paying.month) as first_month, max(report_end.last_month) as last_month
    from paying
    join report_end
        on report_end.account_id = paying.account_id
    group by 1, 2, 3
),
spine as (
    {{ month_spine('customer_span', 'customer_span.first_month', 'customer_span.last_month') }}
),
filled as (
    select spine.account_id, spine.currency, spine.customer_id, spine.month,
           coalesce(paying.mrr, 0) as mrr
    from spine
    left join paying
        on paying.account_id = spine.account_id and paying.currency = spine.currency
        and paying.customer_id = spine.customer_id and paying.month = spine.month
),
compared as (
    select
        filled.*,
        coalesce(lag(mrr) over (
            partition by account_id, currency, customer_id order by month), 0) as previous_mrr,
        -- months are contiguous from the first paying one: any earlier row had MRR or a gap
        row_number() over (
            partition by account_id, currency, customer_id order by month) as month_number
    from filled
)
select
    account_id,
    currency,
    customer_id,
    month,
    mrr,
    previous_mrr,
    {{ mrr_movement('previous_mrr', 'mrr', 'month_number') }} as movement,
    case when previous_mrr = 0 and mrr > 0 and month_number = 1 then mrr else 0 end as new_mrr,
    case when previous_mrr > 0 and mrr > previous_mrr then mrr - previous_mrr else 0 end
        as expansion_mrr,
    case when previous_mrr > 0 and mrr > 0 and mrr < previous_mrr then previous_mrr - mrr else 0 end
        as contraction_mrr,
    case when previous_mrr > 0 and mrr = 0 then previous_mrr else 0 end as churned_mrr,
    case when previous_mrr = 0 and mrr > 0 and month_number > 1 then mrr else 0 end
        as reactivation_mrr
from compared
