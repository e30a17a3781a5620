-- MRR (and ARR, 12 x MRR) per account, currency and month (UTC), and how it moved from
-- the month before: the sums of stripe_mrr_customer_monthly.
with customers as (
    select * from {{ ref('stripe_mrr_customer_monthly') }}
),
report_span as (
    select account_id, currency, min(month) as first_month, max(month) as last_month
    from customers
    group by 1, 2
),
months as (
    -- Every month of the span, even one where nobody paid.
    {{ month_spine('report_span', 'report_span.first_month', 'report_span.last_month') }}
),
totals as (
    select
        account_id,
        currency,
        month,
        sum(mrr) as mrr,
        sum(new_mrr) as new_mrr,
        sum(expansion_mrr) as expansion_mrr,
        sum(contraction_mrr) as contraction_mrr,
        sum(churned_mrr) as churned_mrr,
        sum(reactivation_mrr) as reactivation_mrr,
        sum(case when mrr > 0 then 1 else 0 end) as paying_customers,
        sum(case when new_mrr > 0 then 1 else 0 end) as new_customers,
        sum(case when churned_mrr > 0 then 1 else 0 end) as churned_customers
    from customers
    group by 1, 2, 3
)
select
    months.account_id,
    months.currency,
    months.month,
    cast(coalesce(totals.mrr, 0) as decimal(28, 2)) as mrr,
    cast(12 * coalesce(totals.mrr, 0) as decimal(28, 2)) as arr,
    cast(coalesce(lag(totals.mrr) over (
        partition by months.account_id, months.currency order by months.month), 0)
        as decimal(28, 2)) as previous_mrr,
    cast(coalesce(totals.new_mrr, 0) as decimal(28, 2)) as new_mrr,
    cast(coalesce(totals.expansion_mrr, 0) as decimal(28, 2)) as expansion_mrr,
    cast(coalesce(totals.contraction_mrr, 0) as decimal(28, 2)) as contraction_mrr,
    cast(coalesce(totals.churned_mrr, 0) as decimal(28, 2)) as churned_mrr,
    cast(coalesce(totals.reactivation_mrr, 0) as decimal(28, 2)) as reactivation_mrr,
    cast(coalesce(totals.paying_customers, 0) as integer) as paying_customers,
    cast(coalesce(totals.new_customers, 0) as integer) as new_customers,
    cast(coalesce(totals.churned_customers, 0) as integer) as churned_customers
from months
left join totals
    on totals.account_id = months.account_id and totals.currency = months.currency
    and totals.month = months.month
