-- The warehouse against Stripe's own balance reports, per account, currency and UTC month.
-- Only what the reports cover is compared: from the first reported day to the end of the
-- last (Stripe's reports trail real time; later days are not flagged).
{% set activity_columns = {
    'account_id': 'varchar', 'id': 'varchar', 'created': 'timestamp', 'currency': 'varchar',
    'net': 'bigint', 'reporting_category': 'varchar', 'interval_start': 'timestamp',
    'interval_end': 'timestamp'} %}
{% set summary_columns = {
    'account_id': 'varchar', 'interval_start': 'timestamp', 'interval_end': 'timestamp',
    'currency': 'varchar', 'category': 'varchar', 'net_amount': 'bigint'} %}
with report_activity as (
    select account_id, id, cast(created as timestamp) as created, currency, net
    from {{ report_table('report_balance_activity', activity_columns) }}
),
summary_rows as (
    select
        account_id,
        cast(interval_start as timestamp) as interval_start,
        cast(interval_end as timestamp) as interval_end,
        currency,
        category,
        net_amount
    from {{ report_table('report_balance_summary', summary_columns) }}
),
intervals as (
    select distinct account_id, interval_start, interval_end from summary_rows
),
-- A reload may have run the report over other intervals (the rest of a month instead of
-- its days): an interval within another one is left out.
kept_intervals as (
    select i.*
    from intervals as i
    where not exists (
        select 1 from intervals as o
        where o.account_id = i.account_id
          and o.interval_start <= i.interval_start and o.interval_end >= i.interval_end
          and (o.interval_start <> i.interval_start or o.interval_end <> i.interval_end)
    )
),
summary as (
    select s.*, {{ month_of('s.interval_start') }} as month
    from summary_rows as s
    inner join kept_intervals as k
        on k.account_id = s.account_id and k.interval_start = s.interval_start
       and k.interval_end = s.interval_end
),
coverage as (
    select account_id, min(interval_start) as reported_from, max(interval_end) as reported_until
    from kept_intervals
    group by account_id
),
loaded as (
    select account_id, id, cast(created as timestamp) as created, currency, net,
           reporting_category
    from {{ live('balance_transactions') }}
),
-- The warehouse's transactions and Stripe's itemized activity, each within what the
-- reports cover, with their month.
{% for name, rows in [('warehouse', 'loaded'), ('stripe_activity', 'report_activity')] %}
{{ name }} as (
    select t.*, {{ month_of('t.created') }} as month
    from {{ rows }} as t
    inner join coverage as c
        on c.account_id = t.account_id
       and t.created >= c.reported_from and t.created < c.reported_until
),
{% endfor %}
-- Automatic payouts are not in the activity report: the summary's `payouts` has them.
stripe_months as (
    select account_id, currency, month,
           sum(case when category = 'activity' then net_amount else 0 end) as activity,
           sum(case when category = 'payouts' then net_amount else 0 end) as payouts
    from summary
    group by account_id, currency, month
),
balances as (
    select account_id, currency, month,
           max(case when category = 'starting_balance' and first_interval then net_amount end)
               as starting_balance,
           max(case when category = 'ending_balance' and last_interval then net_amount end)
               as ending_balance
    from (
        select s.*,
               s.interval_start = min(s.interval_start) over (partition by s.account_id, s.currency, s.month)
                   as first_interval,
               s.interval_end = max(s.interval_end) over (partition by s.account_id, s.currency, s.month)
                   as last_interval
        from summary as s
    ) as ranked
    group by account_id, currency, month
),
-- Whether Stripe's reports start where the balance of the currency was 0 (its earliest
-- reported interval starts at 0): the warehouse then holds the whole history, and its
-- running sum must be the ending balance.
history_starts as (
    select account_id, currency, net_amount = 0 as from_zero
    from (
        select s.*,
               row_number() over (partition by s.account_id, s.currency order by s.interval_start)
                   as nth
        from summary as s
        where s.category = 'starting_balance'
    ) as firsts
    where nth = 1
),
warehouse_months as (
    select account_id, currency, month, sum(net) as warehouse_net, count(*) as transactions
    from warehouse
    group by account_id, currency, month
),
activity_months as (
    select account_id, currency, month, sum(net) as activity_net
    from stripe_activity
    group by account_id, currency, month
),
missing_in_warehouse as (
    select a.account_id, a.currency, a.month, {{ id_list('a.id') }} as ids
    from stripe_activity as a
    where not exists (
        select 1 from warehouse as w where w.account_id = a.account_id and w.id = a.id
    )
    group by a.account_id, a.currency, a.month
),
missing_in_stripe as (
    select w.account_id, w.currency, w.month, {{ id_list('w.id') }} as ids
    from warehouse as w
    where w.reporting_category <> 'payout'
      and not exists (
        select 1 from stripe_activity as a where a.account_id = w.account_id and a.id = w.id
    )
    group by w.account_id, w.currency, w.month
),
keys as (
    select account_id, currency, month from warehouse_months
    union
    select account_id, currency, month from stripe_months
),
compared as (
    select
        k.account_id,
        k.month,
        k.currency,
        coalesce(w.transactions, 0) as warehouse_transactions,
        coalesce(w.warehouse_net, 0) as warehouse_net,
        coalesce(s.activity, 0) + coalesce(s.payouts, 0) as stripe_net,
        coalesce(a.activity_net, 0) as stripe_activity_itemized,
        coalesce(s.activity, 0) as stripe_activity,
        coalesce(s.payouts, 0) as stripe_payouts,
        b.starting_balance,
        b.ending_balance,
        sum(coalesce(w.warehouse_net, 0)) over (
            partition by k.account_id, k.currency order by k.month
            rows between unbounded preceding and current row
        ) as warehouse_running_net,
        coalesce(h.from_zero, false) as whole_history,
        mw.ids as missing_in_warehouse,
        ms.ids as missing_in_stripe
    from keys as k
    left join warehouse_months as w
        on w.account_id = k.account_id and w.currency = k.currency and w.month = k.month
    left join stripe_months as s
        on s.account_id = k.account_id and s.currency = k.currency and s.month = k.month
    left join activity_months as a
        on a.account_id = k.account_id and a.currency = k.currency and a.month = k.month
    left join balances as b
        on b.account_id = k.account_id and b.currency = k.currency and b.month = k.month
    left join history_starts as h
        on h.account_id = k.account_id and h.currency = k.currency
    left join missing_in_warehouse as mw
        on mw.account_id = k.account_id and mw.currency = k.currency and mw.month = k.month
    left join missing_in_stripe as ms
        on ms.account_id = k.account_id and ms.currency = k.currency and ms.month = k.month
),
checked as (
    select
        *,
        warehouse_net - stripe_net as difference,
        case
            when starting_balance is null or ending_balance is null then null
            when starting_balance + stripe_activity + stripe_payouts <> ending_balance then 'fails'
            when stripe_activity_itemized <> stripe_activity then 'fails'
            else 'holds'
        end as balance_check
    from compared
)
select
    account_id,
    month,
    currency,
    warehouse_transactions,
    warehouse_net,
    stripe_net,
    difference,
    missing_in_warehouse,
    missing_in_stripe,
    starting_balance,
    stripe_activity,
    stripe_payouts,
    ending_balance,
    case when whole_history then warehouse_running_net end as warehouse_ending_balance,
    case when whole_history then warehouse_running_net = ending_balance end
        as warehouse_balance_matches,
    balance_check,
    case
        when difference = 0 and missing_in_warehouse is null and missing_in_stripe is null
             and coalesce(balance_check, 'holds') = 'holds' then 'reconciled'
        else 'differs'
    end as status
from checked
