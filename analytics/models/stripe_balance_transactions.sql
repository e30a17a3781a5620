-- Every balance transaction with what caused it: the charge, refund or dispute behind it
-- (and through those the customer), or the payout it is; and the automatic payout that
-- settled it (Stripe's payout reconciliation report, the report_payout_reconciliation stream).
{% set settled_columns = {'account_id': 'varchar', 'id': 'varchar', 'automatic_payout_id': 'varchar'} %}
with txns as (
    select balance_transactions.*,
           cast({{ utc('balance_transactions', 'balance_transactions', 'created') }} as date) as utc_day
    from {{ live('balance_transactions') }}
),
charges as (
    select charges.account_id, charges.id, {{ customer_of('charges', 'charges') }} as customer
    from {{ live('charges') }}
),
refunds as (
    select account_id, id, charge from {{ live('refunds') }}
),
disputes as (
    select account_id, id, charge from {{ live('disputes') }}
),
settled as (
    select account_id, id, automatic_payout_id
    from {{ report_table('report_payout_reconciliation', settled_columns) }}
    where automatic_payout_id is not null
),
linked as (
    select
        txns.*,
        case
            when txns.type in ('charge', 'payment') then txns.source
            when refunds.id is not null then refunds.charge
            when disputes.id is not null then disputes.charge
        end as charge_id,
        refunds.id as refund_id,
        disputes.id as dispute_id,
        case when txns.type in ('payout', 'payout_cancel', 'payout_failure') then txns.source end
            as payout_id
    from txns
    left join refunds
        on refunds.account_id = txns.account_id and refunds.id = txns.source
    left join disputes
        on disputes.account_id = txns.account_id and disputes.id = txns.source
)
select
    linked.account_id,
    linked.id as balance_transaction_id,
    linked.created,
    linked.utc_day as day,
    linked.type,
    linked.reporting_category,
    linked.source as source_id,
    case
        when linked.dispute_id is not null then 'dispute'
        when linked.refund_id is not null then 'refund'
        when linked.type in ('charge', 'payment') then 'charge'
        -- a dispute or refund whose object is not loaded still counts as one
        when linked.reporting_category in ('dispute', 'dispute_reversal') then 'dispute'
        when linked.type in ('refund', 'payment_refund') then 'refund'
        when linked.payout_id is not null then 'payout'
        when linked.type in ('transfer', 'transfer_cancel', 'transfer_failure', 'transfer_refund') then 'transfer'
        when linked.type in ('application_fee', 'application_fee_refund') then 'application_fee'
        else linked.type
    end as source_type,
    charges.customer as customer_id,
    linked.charge_id,
    linked.refund_id,
    linked.dispute_id,
    linked.payout_id,
    settled.automatic_payout_id,
    linked.currency,
    linked.amount as gross,
    linked.fee,
    linked.net,
    linked.status,
    linked.available_on,
    linked.description
from linked
left join charges
    on charges.account_id = linked.account_id and charges.id = linked.charge_id
left join settled
    on settled.account_id = linked.account_id and settled.id = linked.id
