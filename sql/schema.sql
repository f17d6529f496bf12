-- mysmshook schema: the queue and the configuration tables.
--
-- Everything lives in schema mysmshook (created by CREATE EXTENSION from the control file).
-- Nothing here is granted to PUBLIC: only the extension's owner (a superuser) reads or writes
-- these tables; the auth server reaches them solely through the SECURITY DEFINER hooks.

-- A job's status and channel. Domains rather than CHECK constraints on job_queue: PostgreSQL
-- re-reads and re-plans a table's CHECK constraints for every statement that writes it (the
-- hook's INSERT runs once per sign-in), while a domain's constraint is planned once per
-- backend. Both read as text.
create domain mysmshook.job_status as text
    constraint job_status_check
    check (value in ('pending', 'running', 'completed', 'failed', 'expired', 'superseded',
                     'paused', 'cancelled'));
comment on domain mysmshook.job_status is
    'A job''s status: pending, running, completed, failed, expired, superseded, paused, cancelled (see job_queue).';
create domain mysmshook.job_channel as text
    constraint job_channel_check check (value in ('sms', 'whatsapp', 'email'));
comment on domain mysmshook.job_channel is 'The channel a job goes out on: sms, whatsapp or email.';

-- What mysmshook.phone_info says of a number (sql/hooks.sql).
create type mysmshook.phone_number as (
    e164         text,    -- the number in E.164 form, when it parses
    calling_code int,
    region       text,    -- CLDR region, e.g. MX; null for non-geographic numbers
    valid        boolean,
    reason       text     -- why it is not valid, worded to follow "phone number +52****5678 "
);

-- One row per message to deliver. The first eight columns keep the meaning they have in
-- Supabase's queue examples; the rest is what a real queue needs.
create table mysmshook.job_queue (
    job_id              uuid        primary key default gen_random_uuid(),
    job_data            jsonb       not null,
    created_at          timestamptz not null default now(),
    status              mysmshook.job_status not null default 'pending',
    priority            int         not null default 0,
    retry_count         int         not null default 0,
    max_retries         int         not null default 3,
    scheduled_at        timestamptz not null default now(),
    -- 'sms' or 'email' as the hook accepted it; 'whatsapp' once a WhatsApp provider took it.
    channel             mysmshook.job_channel not null,
    -- Which message this is: 'sms', 'mfa', or an email_action_type such as 'signup'.
    action_type         text        not null,
    -- The code can no longer be used after this; an unsent job is then marked expired.
    expires_at          timestamptz,
    -- Lease: the token of the claim that holds the job (a fresh uuid per claim, never a pid,
    -- which the system reuses) and until when. The holder renews it while it works; once
    -- locked_until passes, any worker may put the job back in line.
    locked_by           uuid,
    locked_until        timestamptz,
    -- How often a lease ran out on this job (its worker died or stalled). Not a retry: the job
    -- may never have reached a provider. A job that outlives three workers fails.
    rescues             int         not null default 0,
    -- Jobs with the same key carry codes for the same user, action and destination: a newer one
    -- supersedes the older ones (the auth server accepts only its newest code).
    resend_key          text,
    -- Outcome of the last attempt and the history of every provider's answer.
    last_error          text,
    attempts            jsonb       not null default '[]',
    -- The route taken, the provider that accepted it and its message id.
    route               text,
    provider            text,
    provider_message_id text,
    -- Every SMS: GSM-7 or UCS-2, and how many segments the carrier bills.
    sms_encoding        text,
    sms_segments        int,
    finished_at         timestamptz,
    -- When a receipt said the message reached the person (sql/receipts.sql).
    delivered_at        timestamptz,
    -- A sent code's data, kept while the code lives and a provider after the one that sent it
    -- remains: a receipt saying it was not delivered sends it through that provider.
    fallback_data       jsonb,
    -- When the first request to a provider started, and when the provider accepted the message:
    -- the latencies mysmshook.metrics() reports (sql/metrics.sql).
    first_attempt_at    timestamptz,
    sent_at             timestamptz,
    -- Status 'paused': the pause it waits for, 'channel:sms', 'route:mx' or 'provider:twilio'
    -- (sql/operations.sql).
    paused_on           text,
    constraint job_queue_retries_check check (retry_count >= 0 and max_retries >= 0),
    constraint job_queue_lease_check
        check ((status = 'running') = (locked_until is not null)
               and (status = 'running') = (locked_by is not null))
);

comment on table mysmshook.job_queue is
    'Authentication messages waiting for, in, or done with delivery. Status: pending (due at scheduled_at), '
    'running (claimed by a worker until locked_until), completed, failed, expired (code no longer usable), '
    'superseded (a newer code for the same user, action and destination was queued), paused (waiting '
    'for mysmshook.resume), cancelled (by mysmshook.cancel_job).';
comment on column mysmshook.job_queue.job_data is
    'What the message needs (recipient, code, links). Codes and tokens are removed and the recipient masked once the job is final '
    '(fallback_data keeps a copy while the code lives, for a receipt''s fallback or a redrive).';
comment on column mysmshook.job_queue.priority is
    'Higher first: 30 MFA/reauthentication, 20 sign-in and confirmation codes, 10 invites, 0 notifications. Equal priority: due retries first, then older scheduled_at.';

-- The claim (sql/queue.sql) walks this index in its ORDER BY and stops after the rows it wants;
-- only pending rows are in it, so millions of finished rows cost nothing. Within a priority, due
-- retries come first: a retry is older work whose code is running out, and its scheduled_at
-- (the retry time) would otherwise sort behind every new job of the current window. Jobs not
-- yet due are skipped inside the index (scheduled_at is an index column), without heap visits.
create index job_queue_due_idx
    on mysmshook.job_queue (priority desc, (retry_count = 0), scheduled_at, created_at)
    where status = 'pending';
-- Rescue and renewal of leases scan only running rows: a few per worker.
create index job_queue_lease_idx
    on mysmshook.job_queue (locked_until)
    where status = 'running';
-- A claimed job finds out whether a newer code of the same key exists (any status). The hook
-- only adds the key: the check is the worker's, off the sign-in path.
create index job_queue_resend_idx
    on mysmshook.job_queue (resend_key, created_at)
    where resend_key is not null;
-- A receipt names the provider and its message id.
create index job_queue_message_idx
    on mysmshook.job_queue (provider, provider_message_id)
    where provider_message_id is not null;
-- Every worker run clears the fallback copies of codes that expired (sql/receipts.sql): only
-- live codes are in this index, so that costs nothing with millions of finished rows.
create index job_queue_fallback_idx
    on mysmshook.job_queue (expires_at)
    where fallback_data is not null;
-- Retention pruning deletes finished rows oldest first; metrics read the recent ones.
create index job_queue_finished_idx
    on mysmshook.job_queue (finished_at)
    where status in ('completed', 'failed', 'expired', 'superseded', 'cancelled');
-- Resuming a pause finds the jobs that wait for it; each worker run expires the paused codes
-- that died meanwhile.
create index job_queue_paused_idx
    on mysmshook.job_queue (paused_on, expires_at)
    where status = 'paused';

-- A queue table is updated several times per row and deleted in bulk: vacuum it early so dead
-- tuples do not bloat the claim index.
alter table mysmshook.job_queue set (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.05,
    fillfactor = 80
);

-- A job's resend_key names its user, action and full destination. Once the job is final and no
-- copy of its data remains (fallback_data), the key is replaced by a keyed hash, 'h:<hex>':
-- supersede and redrive still recognise the same key (they compare both forms), and the row no
-- longer holds the number or address for the retention period. The hash key is random per
-- database and kept by pg_dump; the oldest row is the key, so that a restore (whose CREATE
-- EXTENSION makes a new row before the dumped one is loaded) keeps the one its hashes used.
create table mysmshook.hash_key (
    created_at timestamptz not null default pg_catalog.clock_timestamp(),
    key        bytea       not null default pg_catalog.uuid_send(pg_catalog.gen_random_uuid())
                                        operator(pg_catalog.||) pg_catalog.uuid_send(pg_catalog.gen_random_uuid())
);
comment on table mysmshook.hash_key is 'The key of the hash that replaces a final job''s resend_key: the oldest row (owner only).';
insert into mysmshook.hash_key default values;

create function mysmshook.hashed_resend_key(resend_key text) returns text
language sql stable
set search_path = pg_catalog, pg_temp
return case when left(resend_key, 2) = 'h:' then resend_key
            else 'h:' || encode(sha256((select k.key from mysmshook.hash_key k order by k.created_at limit 1)
                                       || convert_to(resend_key, 'UTF8')), 'hex') end;

create function mysmshook.hash_final_resend_key() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    new.resend_key := mysmshook.hashed_resend_key(new.resend_key);
    return new;
end;
$$;

create trigger job_queue_hash_final_resend_key
    before update of status, fallback_data on mysmshook.job_queue
    for each row
    when (new.resend_key is not null and left(new.resend_key, 2) <> 'h:' and new.fallback_data is null
          and new.status in ('completed', 'failed', 'expired', 'superseded', 'cancelled'))
    execute function mysmshook.hash_final_resend_key();

-- Providers: one row per configured account. kind names the Rust implementation; settings is
-- that kind's JSON configuration (URL, credentials, sender), validated when saved.
create table mysmshook.providers (
    name        text        primary key,
    kind        text        not null,
    settings    jsonb       not null default '{}',
    enabled     boolean     not null default true,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    constraint providers_name_check check (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$')
);
comment on table mysmshook.providers is
    'Delivery providers. kind is one of the built-in implementations; settings holds its configuration and secrets (readable by the owner only).';

-- Routes: which ordered provider chain a job goes through. A route matches an SMS job when the
-- number's country calling code is in calling_codes or its region (ISO 3166 / CLDR, e.g. 'MX',
-- 'PR') is in regions; routes are tried by position and the channel's catch-all route (no
-- calling codes, no regions) takes the rest. Providers are tried in array order: on a provider-
-- side failure the next one gets the message in the same run.
create table mysmshook.routes (
    name          text    primary key,
    channel       text    not null check (channel in ('sms', 'email')),
    position      int     not null default 100,
    calling_codes int[]   not null default '{}',
    regions       text[]  not null default '{}',
    providers     text[]  not null check (cardinality(providers) > 0),
    -- Android SMS Retriever: this 11-character app hash ends every SMS sent on the route.
    app_hash      text    check (app_hash ~ '^[A-Za-z0-9+/]{11}$'),
    enabled       boolean not null default true,
    constraint routes_name_check check (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    constraint routes_email_catch_all check (channel = 'sms' or (calling_codes = '{}' and regions = '{}'))
);
comment on table mysmshook.routes is
    'Provider chains. An SMS job takes the first enabled route (by position) matching its calling code or region, else its channel''s catch-all route.';

-- Message templates (minijinja; Supabase''s Go-template spelling such as {{ .Token }} is
-- accepted). A job uses the template for its channel, action type and language, falling back
-- to the language's primary subtag, then 'en', then the built-in default.
create table mysmshook.templates (
    channel     text        not null check (channel in ('sms', 'email')),
    action_type text        not null,
    language    text        not null default 'en' check (language ~ '^[a-z]{2,3}(-[a-z0-9]{2,8})*$'),
    subject     text,
    body        text        not null,
    html        text,
    updated_at  timestamptz not null default now(),
    primary key (channel, action_type, language),
    constraint templates_email_subject check (channel = 'sms' or subject is not null)
);
comment on table mysmshook.templates is
    'Custom message templates; checked when saved. body is the SMS text or the plain-text email part.';

-- The tables start empty. A channel with no route of its own goes to the built-in log provider
-- (provider and route both named 'log', defined in code, not rows), which writes the message to
-- the server log only while mysmshook.log_sink is on (the demo and tests set it): otherwise the
-- job waits, saying how to configure a real provider, and nothing passes for delivered.
-- No default rows is what lets pg_dump/pg_restore round-trip the configuration: CREATE
-- EXTENSION on restore would re-create them and the dumped rows would collide with them.

-- Workers cache the configuration (compiled templates, built providers) and reload it when this
-- number changes; the tables' statement triggers (sql/validation.sql) bump it in the changing
-- transaction, so a worker sees the new number together with the new rows.
create table mysmshook.config_version (
    version bigint not null default 0,
    only_row boolean primary key default true check (only_row)
);
insert into mysmshook.config_version default values;

-- Configuration and queue survive pg_dump of a database that has the extension (config_version
-- is not dumped: it only has to change, and a restored database starts with fresh workers).
select pg_catalog.pg_extension_config_dump('mysmshook.job_queue', '');
select pg_catalog.pg_extension_config_dump('mysmshook.providers', '');
select pg_catalog.pg_extension_config_dump('mysmshook.routes', '');
select pg_catalog.pg_extension_config_dump('mysmshook.templates', '');
select pg_catalog.pg_extension_config_dump('mysmshook.hash_key', '');

-- What an operator looks at first: how much is waiting, how old the oldest due job is, and how
-- many "deliveries" only reached the server log (the log provider, with mysmshook.log_sink on).
create view mysmshook.queue_status as
select q.status::text                                    as status,
       q.channel::text                                   as channel,
       count(*)                                          as jobs,
       min(q.scheduled_at) filter (where q.status = 'pending' and q.scheduled_at <= now())
                                                         as oldest_due,
       max(q.finished_at)                                as last_finished,
       count(*) filter (where q.provider = 'log'
                           or q.provider in (select p.name from mysmshook.providers p where p.kind = 'log'))
                                                         as to_server_log
  from mysmshook.job_queue q
 group by q.status, q.channel;
comment on view mysmshook.queue_status is 'Job counts per status and channel; to_server_log: jobs the log provider "delivered" to the server log only.';
