-- THE MRR definition (every other model's MRR is a sum of this one's billed_mrr). Per
-- subscription item and month (UTC), measured at the month's last second (for the latest
-- month, the latest time the data covers; see stripe_mrr_months): the sum over the item's
-- lines that count for MRR (type subscription, not prorations, on invoices neither draft
-- nor void) whose period holds that instant (start <= t < end), while the subscription had
-- not ended (ended_at empty or later), of the line's amount less its discounts normalised
-- to one month. Rows run from the item's first month with MRR to the month after its last
-- (its churn), or the account's latest month.
with lines as (
    select * from {{ ref('stripe_invoice_lines') }} where counts_for_mrr
),
months as (
    select * from {{ ref('stripe_mrr_months') }}
),
subscriptions as (
    select account_id, id, {{ utc('subscriptions', 'subscriptions', 'ended_at') }} as ended_at
    from {{ live('subscriptions') }}
),
measured as (
    select
        months.account_id,
        lines.currency,
        lines.customer_id,
        lines.subscription_id,
        lines.subscription_item_id,
        months.month,
        sum(lines.monthly_amount) as billed_mrr,
        sum(lines.contract_monthly_amount) as contract_mrr,
        max(lines.price_id) as price_id,
        max(lines.quantity) as quantity
    from months
    join lines
        on lines.account_id = months.account_id
        and lines.period_start <= months.measured_at and lines.period_end > months.measured_at
    left join subscriptions
        on subscriptions.account_id = lines.account_id and subscriptions.id = lines.subscription_id
    where subscriptions.ended_at is null or subscriptions.ended_at > months.measured_at
    group by 1, 2, 3, 4, 5, 6
),
spans as (
    select measured.account_id, measured.currency, measured.customer_id,
           measured.subscription_id, measured.subscription_item_id,
           min(measured.month) as first_month,
           max(measured.month) as last_month
    from measured
    where measured.billed_mrr > 0 or measured.contract_mrr > 0
    group by 1, 2, 3, 4, 5
),
spine as (
    select spans.*, months.month
    from spans
    join months
        on months.account_id = spans.account_id
        and months.month >= spans.first_month
        and months.month <= {{ add_months('spans.last_month', 1) }}
),
filled as (
    select
        spine.account_id, spine.currency, spine.customer_id, spine.subscription_id,
        spine.subscription_item_id, spine.month,
        measured.price_id, measured.quantity,
        coalesce(measured.contract_mrr, {{ fraction_amount('0', '1') }}) as contract_mrr,
        coalesce(measured.billed_mrr, {{ fraction_amount('0', '1') }}) as billed_mrr
    from spine
    left join measured
        on measured.account_id = spine.account_id
        and measured.subscription_item_id = spine.subscription_item_id
        and measured.month = spine.month
        and measured.customer_id = spine.customer_id
        and measured.currency = spine.currency
),
compared as (
    select
        filled.*,
        coalesce(lag(billed_mrr) over (
            partition by account_id, currency, customer_id, subscription_item_id order by month),
            0) as previous_billed_mrr,
        row_number() over (
            partition by account_id, currency, customer_id, subscription_item_id order by month)
            as month_number
    from filled
)
select
    account_id,
    currency,
    customer_id,
    subscription_id,
    subscription_item_id,
    month,
    price_id,
    quantity,
    contract_mrr,
    billed_mrr,
    cast(12 * billed_mrr as decimal(28, 6)) as billed_arr,
    previous_billed_mrr,
    {{ mrr_movement('previous_billed_mrr', 'billed_mrr', 'month_number') }} as movement
from compared
