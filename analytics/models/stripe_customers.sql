-- Each customer: when they first and last paid, what they brought in net of fees,
-- refunds and disputes, their MRR in the latest month of their account (per currency,
-- never added across currencies), and their subscriptions.
with customers as (
    select * from {{ live('customers') }}
),
payments as (
    select charges.account_id, {{ customer_of('charges', 'charges') }} as customer,
           min(created) as first_payment_at, max(created) as last_payment_at,
           count(*) as successful_charges
    from {{ live('charges') }}
    where status = 'succeeded' and {{ customer_of('charges', 'charges') }} is not null
    group by 1, 2
),
balance as (
    select account_id, customer_id, sum(net) as lifetime_net
    from {{ ref('stripe_balance_transactions') }}
    where customer_id is not null and source_type in ('charge', 'refund', 'dispute')
    group by 1, 2
),
latest_month as (
    select account_id, max(month) as month
    from {{ ref('stripe_mrr_months') }}
    group by 1
),
mrr_by_currency as (
    -- The customer's MRR in each currency, in the latest month of its account.
    select mrr.account_id, mrr.customer_id, mrr.currency, mrr.mrr
    from {{ ref('stripe_mrr_customer_monthly') }} as mrr
    join latest_month
        on latest_month.account_id = mrr.account_id and latest_month.month = mrr.month
    where mrr.mrr > 0
),
current_mrr as (
    select account_id, customer_id,
           string_agg(currency || ':' || cast(mrr as varchar), ',' order by currency)
               as current_mrr_by_currency
    from mrr_by_currency
    group by 1, 2
),
subscriptions as (
    select account_id, customer_id, count(*) as subscriptions,
           sum(case when status in ('active', 'past_due', 'trialing') then 1 else 0 end)
               as active_subscriptions
    from {{ ref('stripe_subscriptions') }}
    group by 1, 2
)
select
    customers.account_id,
    customers.id as customer_id,
    customers.email,
    customers.name,
    customers.currency,
    customers.created,
    payments.first_payment_at,
    payments.last_payment_at,
    coalesce(payments.successful_charges, 0) as successful_charges,
    coalesce(balance.lifetime_net, 0) as lifetime_net,
    cast(coalesce(own_currency.mrr, 0) as decimal(28, 2)) as current_mrr,
    current_mrr.current_mrr_by_currency,
    coalesce(subscriptions.subscriptions, 0) as subscriptions,
    coalesce(subscriptions.active_subscriptions, 0) as active_subscriptions
from customers
left join payments
    on payments.account_id = customers.account_id and payments.customer = customers.id
left join balance
    on balance.account_id = customers.account_id and balance.customer_id = customers.id
left join current_mrr
    on current_mrr.account_id = customers.account_id and current_mrr.customer_id = customers.id
left join mrr_by_currency as own_currency
    on own_currency.account_id = customers.account_id and own_currency.customer_id = customers.id
    and own_currency.currency = customers.currency
left join subscriptions
    on subscriptions.account_id = customers.account_id and subscriptions.customer_id = customers.id
