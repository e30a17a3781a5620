-- The instants MRR is measured at: per account, every month (UTC) from the first month a
-- line counting for MRR starts to the month of the latest time the account's data covers
-- (its latest invoice or subscription change); `measured_at` is the month's last second,
-- or for that latest month the latest time the data covers.
with first_lines as (
    select account_id, min(period_start) as first_start
    from {{ ref('stripe_invoice_lines') }}
    where counts_for_mrr
    group by 1
),
data_times as (
    select account_id, max({{ utc('invoices', 'invoices', 'created') }}) as at
    from {{ live('invoices') }} group by 1
    union all
    select account_id, max({{ utc('subscriptions', 'subscriptions', 'created') }})
    from {{ live('subscriptions') }} group by 1
    union all
    select account_id, max({{ utc('subscriptions', 'subscriptions', 'canceled_at') }})
    from {{ live('subscriptions') }} group by 1
    union all
    select account_id, max({{ utc('subscriptions', 'subscriptions', 'ended_at') }})
    from {{ live('subscriptions') }} group by 1
),
covered as (
    select first_lines.account_id, {{ month_of('first_lines.first_start') }} as first_month,
           max(data_times.at) as data_through
    from first_lines
    join data_times on data_times.account_id = first_lines.account_id
    group by 1, 2
),
spine as (
    {{ month_spine('covered', 'covered.first_month', month_of('covered.data_through')) }}
)
select
    account_id,
    month,
    case
        when {{ month_end('month') }} < data_through then {{ month_end('month') }}
        else data_through
    end as measured_at,
    {{ month_end('month') }} <= data_through as complete
from spine
