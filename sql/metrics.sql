-- What the queue is doing, per channel, route and provider: the live queue (pending, paused,
-- running), and over a recent period the jobs that finished, the requests made to providers,
-- receipts, and latencies. Cheap with millions of finished rows: the live statuses are read
-- from their partial indexes, the recent period from job_queue_finished_idx.
--
-- A row's route and provider are those a job took: the provider that accepted it, or for a job
-- that was not sent the last one it was tried on; jobs not routed yet (new) have neither.
-- Requests count per provider asked, so a fallback chain shows every provider it went through.
create function mysmshook.metrics(recent interval default '15 minutes')
returns table (
    channel              text,
    route                text,
    provider             text,
    -- Now.
    pending              bigint,
    paused               bigint,
    running              bigint,
    retries_waiting      bigint,   -- pending after a failed attempt
    oldest_due_seconds   float8,   -- how long the oldest due pending job has been due
    -- Finished within `recent`.
    completed            bigint,
    failed               bigint,
    expired              bigint,
    superseded           bigint,
    cancelled            bigint,
    delivered            bigint,   -- completed, and a receipt confirmed it reached the person
    success_rate         float8,   -- completed / (completed + failed + expired)
    -- Requests to providers within `recent`, and how they failed.
    requests             bigint,
    retryable_failures   bigint,   -- timeouts, 5xx, throttling: tried again later
    provider_failures    bigint,   -- the provider refused the request: the next one is asked
    recipient_rejections bigint,   -- the number or address itself was refused
    -- Milliseconds: the hook's insert to the first request (p50, p95, p99), and a request to
    -- its answer.
    queue_latency_ms     float8[],
    request_latency_ms   float8[]
)
language sql stable security definer
set search_path = pg_catalog, pg_temp
-- The recent period is a parameter, so the planner guesses a third of the finished rows and
-- would compile the query with JIT: tens of milliseconds for a query that takes a few.
set jit = off
as $$
    with live as materialized (
        select q.channel, q.route, q.provider, q.status, q.retry_count, q.scheduled_at, q.created_at, q.attempts
          from mysmshook.job_queue q where q.status = 'pending'
        union all
        select q.channel, q.route, q.provider, q.status, q.retry_count, q.scheduled_at, q.created_at, q.attempts
          from mysmshook.job_queue q where q.status = 'paused'
        union all
        select q.channel, q.route, q.provider, q.status, q.retry_count, q.scheduled_at, q.created_at, q.attempts
          from mysmshook.job_queue q where q.status = 'running'
    ), finished as materialized (
        select q.channel, q.route,
               coalesce(q.provider, (
                   select a->>'provider' from jsonb_array_elements(q.attempts) with ordinality x(a, n)
                    where a->>'result' in ('sent', 'retryable', 'provider_failed', 'recipient_rejected',
                                           'channel_rejected') and a->>'provider' <> '-'
                    order by x.n desc limit 1)) as provider,
               q.status, q.created_at, q.first_attempt_at, q.delivered_at, q.attempts
          from mysmshook.job_queue q
         where q.status in ('completed', 'failed', 'expired', 'superseded', 'cancelled')
           and q.finished_at >= now() - recent
    ), requests as (
        select j.channel, j.route, a->>'provider' as provider, a->>'result' as result,
               case when jsonb_typeof(a->'ms') = 'number' then (a->>'ms')::float8 end as ms
          from (select f.channel, f.route, f.attempts from finished f
                union all
                select l.channel, l.route, l.attempts from live l where l.attempts <> '[]') j,
               jsonb_array_elements(j.attempts) a
         where a->>'result' in ('sent', 'retryable', 'provider_failed', 'recipient_rejected', 'channel_rejected')
           and a->>'provider' <> '-'
           -- Written by the worker as RFC 3339; anything else (a hand edit) is not counted.
           and case when a->>'at' ~ '^\d{4}-\d\d-\d\dT' then (a->>'at')::timestamptz >= now() - recent end
    ), figures as (
        select l.channel, l.route, l.provider,
               count(*) filter (where l.status = 'pending') as pending,
               count(*) filter (where l.status = 'paused') as paused,
               count(*) filter (where l.status = 'running') as running,
               count(*) filter (where l.status = 'pending' and l.retry_count > 0) as retries_waiting,
               -- Due since: a new job's scheduled_at is the start of its window, before it existed.
               extract(epoch from now() - min(greatest(l.scheduled_at, l.created_at)) filter (
                   where l.status = 'pending' and l.scheduled_at <= now()))::float8 as oldest_due_seconds,
               null::bigint as completed, null::bigint as failed, null::bigint as expired,
               null::bigint as superseded, null::bigint as cancelled, null::bigint as delivered,
               null::bigint as requests, null::bigint as retryable_failures,
               null::bigint as provider_failures, null::bigint as recipient_rejections,
               null::float8[] as queue_latency_ms, null::float8[] as request_latency_ms
          from live l
         group by l.channel, l.route, l.provider
        union all
        select f.channel, f.route, f.provider, null, null, null, null, null,
               count(*) filter (where f.status = 'completed'),
               count(*) filter (where f.status = 'failed'),
               count(*) filter (where f.status = 'expired'),
               count(*) filter (where f.status = 'superseded'),
               count(*) filter (where f.status = 'cancelled'),
               count(*) filter (where f.status = 'completed' and f.delivered_at is not null),
               null, null, null, null,
               percentile_cont(array[0.5, 0.95, 0.99]) within group (
                   order by extract(epoch from f.first_attempt_at - f.created_at) * 1000),
               null
          from finished f
         group by f.channel, f.route, f.provider
        union all
        select r.channel, r.route, r.provider, null, null, null, null, null,
               null, null, null, null, null, null,
               count(*),
               count(*) filter (where r.result = 'retryable'),
               count(*) filter (where r.result = 'provider_failed'),
               count(*) filter (where r.result in ('recipient_rejected', 'channel_rejected')),
               null,
               percentile_cont(array[0.5, 0.95, 0.99]) within group (order by r.ms)
          from requests r
         group by r.channel, r.route, r.provider
    )
    select x.channel, x.route, x.provider,
           coalesce(sum(x.pending), 0)::bigint, coalesce(sum(x.paused), 0)::bigint,
           coalesce(sum(x.running), 0)::bigint, coalesce(sum(x.retries_waiting), 0)::bigint,
           max(x.oldest_due_seconds),
           coalesce(sum(x.completed), 0)::bigint, coalesce(sum(x.failed), 0)::bigint,
           coalesce(sum(x.expired), 0)::bigint, coalesce(sum(x.superseded), 0)::bigint,
           coalesce(sum(x.cancelled), 0)::bigint, coalesce(sum(x.delivered), 0)::bigint,
           sum(x.completed)::float8 / nullif(sum(x.completed) + sum(x.failed) + sum(x.expired), 0),
           coalesce(sum(x.requests), 0)::bigint, coalesce(sum(x.retryable_failures), 0)::bigint,
           coalesce(sum(x.provider_failures), 0)::bigint,
           coalesce(sum(x.recipient_rejections), 0)::bigint,
           max(x.queue_latency_ms), max(x.request_latency_ms)
      from figures x
     group by x.channel, x.route, x.provider
     order by x.channel, x.route nulls first, x.provider nulls first
$$;
comment on function mysmshook.metrics(interval) is
    'Queue figures per channel, route and provider: live counts, and over the recent period finished jobs, requests, failures, receipts and latency percentiles (ms: p50, p95, p99).';

-- A label value as the exposition format escapes it; absent is empty.
create function mysmshook.prometheus_label(value text) returns text
language sql immutable
set search_path = pg_catalog, pg_temp
return replace(replace(replace(coalesce(value, ''), E'\\', E'\\\\'), '"', E'\\"'), E'\n', E'\\n');

-- The same figures in Prometheus' text exposition format, for a textfile collector or any
-- exporter that serves text. Gauges: the windowed counts are over `recent`, not counters.
create function mysmshook.metrics_prometheus(recent interval default '15 minutes') returns text
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    with m as (
        select m.*,
               format('channel="%s",route="%s",provider="%s"',
                      mysmshook.prometheus_label(m.channel), mysmshook.prometheus_label(m.route),
                      mysmshook.prometheus_label(m.provider)) as labels
          from mysmshook.metrics(recent) m
    ), samples as (
        select s.metric, m.labels || s.extra as labels, s.value
          from m, lateral (values
              ('mysmshook_jobs', ',status="pending"', m.pending::float8),
              ('mysmshook_jobs', ',status="paused"', m.paused),
              ('mysmshook_jobs', ',status="running"', m.running),
              ('mysmshook_retries_waiting', '', m.retries_waiting),
              ('mysmshook_oldest_due_seconds', '', m.oldest_due_seconds),
              ('mysmshook_jobs_finished', ',status="completed"', m.completed),
              ('mysmshook_jobs_finished', ',status="failed"', m.failed),
              ('mysmshook_jobs_finished', ',status="expired"', m.expired),
              ('mysmshook_jobs_finished', ',status="superseded"', m.superseded),
              ('mysmshook_jobs_finished', ',status="cancelled"', m.cancelled),
              ('mysmshook_delivered', '', m.delivered),
              ('mysmshook_success_ratio', '', m.success_rate),
              ('mysmshook_requests', '', m.requests),
              ('mysmshook_request_failures', ',kind="retryable"', m.retryable_failures),
              ('mysmshook_request_failures', ',kind="provider"', m.provider_failures),
              ('mysmshook_request_failures', ',kind="recipient"', m.recipient_rejections),
              ('mysmshook_queue_latency_seconds', ',quantile="0.5"', m.queue_latency_ms[1] / 1000),
              ('mysmshook_queue_latency_seconds', ',quantile="0.95"', m.queue_latency_ms[2] / 1000),
              ('mysmshook_queue_latency_seconds', ',quantile="0.99"', m.queue_latency_ms[3] / 1000),
              ('mysmshook_request_latency_seconds', ',quantile="0.5"', m.request_latency_ms[1] / 1000),
              ('mysmshook_request_latency_seconds', ',quantile="0.95"', m.request_latency_ms[2] / 1000),
              ('mysmshook_request_latency_seconds', ',quantile="0.99"', m.request_latency_ms[3] / 1000)
          ) s(metric, extra, value)
         where s.value is not null
    ), help(n, metric, text) as (values
        (1, 'mysmshook_jobs', 'Jobs in the queue now, by status.'),
        (2, 'mysmshook_retries_waiting', 'Pending jobs waiting to be tried again.'),
        (3, 'mysmshook_oldest_due_seconds', 'Age of the oldest due pending job.'),
        (4, 'mysmshook_jobs_finished', 'Jobs that finished in the recent period, by status.'),
        (5, 'mysmshook_delivered', 'Completed jobs in the recent period that a receipt confirmed.'),
        (6, 'mysmshook_success_ratio', 'Completed / (completed + failed + expired) in the recent period.'),
        (7, 'mysmshook_requests', 'Requests to providers in the recent period.'),
        (8, 'mysmshook_request_failures', 'Failed requests in the recent period, by kind.'),
        (9, 'mysmshook_queue_latency_seconds', 'From the hook to the first request, recent period.'),
        (10, 'mysmshook_request_latency_seconds', 'From a request to the provider''s answer, recent period.')
    )
    select coalesce(string_agg(block, '' order by n), '')
      from (select h.n,
                   format(E'# HELP %s %s\n# TYPE %s gauge\n', h.metric, h.text, h.metric)
                   || string_agg(format(E'%s{%s} %s\n', s.metric, s.labels, s.value), '' order by s.labels)
                   as block
              from help h join samples s on s.metric = h.metric
             group by h.n, h.metric, h.text) blocks
$$;
comment on function mysmshook.metrics_prometheus(interval) is
    'mysmshook.metrics() in Prometheus text exposition format.';
