-- Per account, currency and UTC day: money in and out of the balance, from balance
-- transactions, beside the day's successful charges and new customers.
with activity as (
    select
        account_id,
        currency,
        day,
        sum(case when source_type = 'charge' then gross else 0 end) as gross_volume,
        sum(case when source_type = 'refund' then -gross else 0 end) as refunds,
        sum(case when source_type = 'dispute' then -gross else 0 end) as disputes,
        sum(fee) as fees,
        sum(net) as net
    from {{ ref('stripe_balance_transactions') }}
    where source_type in ('charge', 'refund', 'dispute')
    group by 1, 2, 3
),
charges as (
    select account_id, currency, cast({{ utc('charges', 'charges', 'created') }} as date) as day,
           count(*) as successful_charges
    from {{ live('charges') }}
    where status = 'succeeded'
    group by 1, 2, 3
),
customers as (
    -- A customer Stripe has not billed yet has no currency: ISO 4217's "xxx" (no currency).
    select account_id, coalesce(currency, 'xxx') as currency,
           cast({{ utc('customers', 'customers', 'created') }} as date) as day,
           count(*) as new_customers
    from {{ live('customers') }}
    group by 1, 2, 3
),
days as (
    select account_id, currency, day from activity
    union
    select account_id, currency, day from charges
    union
    select account_id, currency, day from customers
)
select
    days.account_id,
    days.currency,
    days.day,
    coalesce(activity.gross_volume, 0) as gross_volume,
    coalesce(activity.refunds, 0) as refunds,
    coalesce(activity.disputes, 0) as disputes,
    coalesce(activity.fees, 0) as fees,
    coalesce(activity.net, 0) as net,
    coalesce(charges.successful_charges, 0) as successful_charges,
    coalesce(customers.new_customers, 0) as new_customers
from days
left join activity
    on activity.account_id = days.account_id and activity.currency = days.currency
    and activity.day = days.day
left join charges
    on charges.account_id = days.account_id and charges.currency = days.currency
    and charges.day = days.day
left join customers
    on customers.account_id = days.account_id and customers.currency = days.currency
    and customers.day = days.day
