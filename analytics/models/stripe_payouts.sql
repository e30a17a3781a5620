-- One row per payout, and for an automatic payout the balance transactions it settled:
-- those of the warehouse carrying its id (stripe_balance_transactions.automatic_payout_id,
-- from Stripe's payout reconciliation report). A paid automatic payout that arrived within
-- what the report covers is `reconciled` when its amount equals the net of what it
-- settled and every transaction Stripe lists for it is in the warehouse; else it `differs`.
-- Other payouts (manual, not paid yet, or after the last reported day) are `not_compared`.
{% set payout_columns = {
    'account_id': 'varchar', 'id': 'varchar', 'currency': 'varchar', 'amount': 'bigint',
    'arrival_date': 'timestamp', 'status': 'varchar', 'automatic': 'boolean',
    '_sdc_deleted_at': 'varchar'} %}
{% set report_columns = {
    'account_id': 'varchar', 'id': 'varchar', 'automatic_payout_id': 'varchar',
    'interval_start': 'timestamp', 'interval_end': 'timestamp'} %}
with payouts as (
    select account_id, id, currency, amount,
           cast({{ utc('payouts', 'payouts', 'arrival_date') }} as timestamp) as arrival_date,
           status, automatic
    from {{ report_table('payouts', payout_columns) }}
    where _sdc_deleted_at is null
),
report as (
    select account_id, id, automatic_payout_id,
           cast(interval_start as timestamp) as interval_start,
           cast(interval_end as timestamp) as interval_end
    from {{ report_table('report_payout_reconciliation', report_columns) }}
    where automatic_payout_id is not null
),
-- The report runs over whole days by payout arrival, one run for every account at once.
coverage as (
    select min(interval_start) as reported_from, max(interval_end) as reported_until
    from report
),
settled as (
    select account_id, automatic_payout_id as payout_id, count(*) as settled_count,
           sum(net) as settled_net
    from {{ ref('stripe_balance_transactions') }}
    where automatic_payout_id is not null
    group by account_id, automatic_payout_id
),
stripe_settled as (
    select report.account_id, report.automatic_payout_id as payout_id,
           count(*) as stripe_settled_count,
           {{ id_list('case when bt.balance_transaction_id is null then report.id end') }}
               as missing_in_warehouse
    from report
    left join {{ ref('stripe_balance_transactions') }} as bt
        on bt.account_id = report.account_id and bt.balance_transaction_id = report.id
    group by report.account_id, report.automatic_payout_id
),
compared as (
    select
        payouts.*,
        coalesce(settled.settled_count, 0) as settled_count,
        coalesce(settled.settled_net, 0) as settled_net,
        coalesce(stripe_settled.stripe_settled_count, 0) as stripe_settled_count,
        stripe_settled.missing_in_warehouse,
        payouts.automatic and payouts.status = 'paid'
            and payouts.arrival_date >= coverage.reported_from
            and payouts.arrival_date < coverage.reported_until as in_report
    from payouts
    cross join coverage
    left join settled
        on settled.account_id = payouts.account_id and settled.payout_id = payouts.id
    left join stripe_settled
        on stripe_settled.account_id = payouts.account_id and stripe_settled.payout_id = payouts.id
)
select
    account_id,
    id as payout_id,
    currency,
    amount,
    arrival_date,
    status as payout_status,
    automatic,
    settled_count,
    settled_net,
    stripe_settled_count,
    amount - settled_net as difference,
    missing_in_warehouse,
    case
        when not coalesce(in_report, false) then 'not_compared'
        when amount = settled_net and missing_in_warehouse is null
             and settled_count = stripe_settled_count then 'reconciled'
        else 'differs'
    end as status
from compared
