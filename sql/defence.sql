-- SMS pumping defence: what the SMS hook (sql/hooks.sql) checks before it queues a code. A
-- refused request queues nothing and gets an error object Auth shows to the client; the
-- refusal is written to the audit log (mysmshook.record_refusal).
--
--   geo_rules      destination regions allowed or denied, per channel
--   limits         velocity limits and spend caps: at most `maximum` per `per`, sliding
--   sms_prices     the estimated price of one SMS segment per region, for spend caps
--   limit_counters what the limits have counted (unlogged: a crash empties it)

-- A region is a libphonenumber (CLDR) region such as 'MX', or a calling code such as '+52'.
-- With no rows every region is allowed. 'deny' rows refuse their regions; once a channel has
-- an 'allow' row, only allowed regions pass. The hook's channel is 'sms' (WhatsApp is a
-- delivery choice made later, by the routes).
create table mysmshook.geo_rules (
    channel text    not null default 'sms',
    region  text    not null,
    allow   boolean not null,
    primary key (channel, region),
    constraint geo_rules_channel_check check (channel = 'sms'),
    constraint geo_rules_region_check check (region ~ '^([A-Z]{2}|\+[1-9][0-9]{0,2})$')
);
comment on table mysmshook.geo_rules is
    'Destination regions (CLDR, e.g. MX) or calling codes (e.g. +52) allowed or denied for SMS codes. No rows: all allowed; any allow row: only allowed ones pass.';

-- Velocity limits and spend caps. scope says what is counted together:
--   destination  one phone number              prefix   numbers sharing their first
--   ip           one client IP (the event's              prefix_digits digits (after +),
--                metadata.ip_address)                    where pumped ranges live
--   country      one destination region        global   every code
--   country_spend, global_spend: the estimated price (sms_prices), not the count.
-- A request over any limit is refused. Counting is a sliding window: the current window's
-- count plus the previous window's, weighted by how much of it still overlaps.
-- Built in (no row): 'codes_per_number', at most 5 codes to one number in 10 minutes. A row of
-- that name replaces it (enabled = false turns it off).
create table mysmshook.limits (
    name          text     primary key,
    scope         text     not null,
    prefix_digits int,
    per           interval not null,
    maximum       float8   not null,
    enabled       boolean  not null default true,
    constraint limits_scope_check check (scope in
        ('destination', 'prefix', 'ip', 'country', 'global', 'country_spend', 'global_spend')),
    constraint limits_prefix_check check ((scope = 'prefix') = (prefix_digits is not null)
                                          and coalesce(prefix_digits between 1 and 14, true)),
    constraint limits_per_check check (per between interval '1 second' and interval '31 days'),
    constraint limits_maximum_check check (maximum >= 0)
);
comment on table mysmshook.limits is
    'Velocity limits and spend caps the SMS hook enforces (sliding window). Built in: codes_per_number, 5 per 10 minutes per destination, unless a row of that name replaces it.';

-- The estimated price of one SMS segment by destination region; '*' for every other region.
-- A code is estimated at one segment (the built-in wording is); the worker records the real
-- count in job_queue.sms_segments.
create table mysmshook.sms_prices (
    region      text    primary key,
    per_segment numeric not null check (per_segment >= 0),
    constraint sms_prices_region_check check (region ~ '^([A-Z]{2}|\*)$')
);
comment on table mysmshook.sms_prices is
    'Estimated price of one SMS segment per destination region (''*'': any other), for spend caps.';

-- What the limits have counted: per limit and key, this window's amount and the previous
-- window's (one row, so the hook reads both from the row it updates). Unlogged: nothing is
-- written to WAL for it on the sign-in path, and a crash (or a failover: standbys do not have
-- it) starts every count at zero. Shared counters (country, global, spend) are spread over 8
-- shards by backend, so that sign-ins do not queue behind one row lock held until each auth
-- transaction commits.
-- Byte-wise collation: keys are numbers, addresses and names, compared on every sign-in.
create unlogged table mysmshook.limit_counters (
    limit_name   text        collate "C" not null,
    key          text        collate "C" not null,
    shard        smallint    not null,
    window_start timestamptz not null,
    amount       float8      not null,
    previous     float8      not null,
    primary key (limit_name, key, shard)
);

-- Checks a request for a code against the geo rules and counts it against every limit that
-- applies; returns the rule that refuses it ('geo' or a limit's name, the first by name when
-- several do), or null. Each limit counts in its counter row for this key, rolled over when
-- its window has passed; shared limits (country, global, spend) also read the other shards'
-- rows. Sliding window: this window's amount plus the previous window's, weighted by how much
-- of it still falls within `per` of now.
create function mysmshook.refusing_rule(to_number text, to_region text, to_calling_code int, from_ip text)
returns text
language plpgsql volatile
as $$
declare
    now_s float8 := extract(epoch from clock_timestamp());
    -- Shared counters are spread over 8 rows per key, by backend, so that concurrent sign-ins
    -- do not queue behind one row lock held until each auth transaction commits.
    my_shard smallint := pg_backend_pid() % 8;
    geo_refused boolean;
    -- The limit being counted (scalars, not a record: a record's fields would make PL/pgSQL
    -- plan the expressions that read them again in every transaction).
    this_limit text;
    limit_scope text;
    limit_digits int;
    limit_per float8;
    limit_maximum float8;
    counter_key text;
    shared boolean;
    this_window float8;
    added float8;
    counted float8;
    counted_before float8;
    others float8;
    others_before float8;
    rule text;
begin
    -- The geo rules' verdict and the limits, in one statement (one row even without limits).
    -- Regions match as CLDR codes (MX) or calling codes (+52).
    -- Every row carries the same verdict (computed once), so the first row decides it before
    -- anything is counted. No join or grouping: starting their executor nodes cost more than
    -- the rest. In name order: each counter row stays locked until the auth transaction ends,
    -- and two sign-ins that locked the same rows in different orders would deadlock.
    for geo_refused, this_limit, limit_scope, limit_digits, limit_per, limit_maximum in
        select (select coalesce(bool_or(not g.allow and g.region in (to_region, '+' || to_calling_code)), false)
                       or (coalesce(bool_or(g.allow), false)
                           and not coalesce(bool_or(g.allow and g.region in (to_region, '+' || to_calling_code)),
                                            false))
                  from mysmshook.geo_rules g),
               l.name, l.scope, l.prefix_digits, l.per, l.maximum
          from (select l.name, l.scope, l.prefix_digits, extract(epoch from l.per)::float8, l.maximum
                  from mysmshook.limits l
                 where l.enabled
                union all
                select 'codes_per_number', 'destination', null, 600, 5
                 where not exists (select from mysmshook.limits l where l.name = 'codes_per_number')
                union all
                select null, null, null, null, null) l(name, scope, prefix_digits, per, maximum)
         order by l.name
    loop
        if geo_refused then
            return 'geo';
        end if;
        continue when this_limit is null;
        counter_key := case limit_scope when 'destination' then to_number
                                        when 'prefix' then left(to_number, limit_digits + 1)
                                        when 'ip' then from_ip
                                        when 'country' then to_region
                                        when 'country_spend' then to_region
                                        else '' end;
        continue when counter_key is null;  -- no IP, or no region: the limit does not apply
        shared := limit_scope not in ('destination', 'prefix', 'ip');
        this_window := floor(now_s / limit_per) * limit_per;
        added := 1;
        if limit_scope like '%spend' then
            select coalesce(max(s.per_segment) filter (where s.region = to_region),
                            max(s.per_segment) filter (where s.region = '*'), 0)
              into added
              from mysmshook.sms_prices s
             where s.region in (to_region, '*');
        end if;
        insert into mysmshook.limit_counters as c (limit_name, key, shard, window_start, amount, previous)
        values (this_limit, counter_key, case when shared then my_shard else 0 end, to_timestamp(this_window),
                added, 0)
        on conflict (limit_name, key, shard) do update set
            previous = case when c.window_start = excluded.window_start then c.previous
                            when c.window_start = to_timestamp(this_window - limit_per) then c.amount
                            else 0 end,
            amount = case when c.window_start = excluded.window_start then c.amount + excluded.amount
                          else excluded.amount end,
            window_start = excluded.window_start
        returning c.amount, c.previous into counted, counted_before;
        others := 0;
        others_before := 0;
        if shared then
            select coalesce(sum(o.amount) filter (where o.window_start = to_timestamp(this_window)), 0),
                   coalesce(sum(case when o.window_start = to_timestamp(this_window) then o.previous
                                     when o.window_start = to_timestamp(this_window - limit_per) then o.amount
                                     else 0 end), 0)
              into others, others_before
              from mysmshook.limit_counters o
             where o.limit_name = this_limit and o.key = counter_key and o.shard <> my_shard;
        end if;
        if counted + others
           + (counted_before + others_before) * (1 - least(greatest((now_s - this_window) / limit_per, 0), 1))
           > limit_maximum + 1e-9
           and (rule is null or this_limit collate "C" < rule collate "C") then
            rule := this_limit;
        end if;
    end loop;
    return rule;
end;
$$;
-- Deletes counters no limit reads any more (last counted two windows ago, or of a limit gone).
-- Never waits for a counter a sign-in holds (it is counting again, so not stale): the hook locks
-- its counters in name order and the delete would take them in the table's, so waiting could
-- deadlock with the sign-in and fail it.
create function mysmshook.prune_limit_counters() returns int
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    pruned int;
begin
    delete from mysmshook.limit_counters c
     where c.ctid = any (array(
        select o.ctid
          from mysmshook.limit_counters o
         where not exists (
            select 1
              from (select l.name, l.per from mysmshook.limits l
                    union all
                    select 'codes_per_number', interval '10 minutes'
                     where not exists (select 1 from mysmshook.limits l where l.name = 'codes_per_number')) r
             where r.name = o.limit_name and o.window_start >= now() - 2 * r.per)
           for update skip locked));
    get diagnostics pruned = row_count;
    return pruned;
end;
$$;

-- A conservative starting allow-list: the regions your SMS codes were delivered to since
-- `since` (at least `min_jobs` of them), from the queue's own history.
--   insert into mysmshook.geo_rules (region, allow)
--   select region, true from mysmshook.suggested_geo_allowlist();
create function mysmshook.suggested_geo_allowlist(since interval default '30 days', min_jobs int default 3)
returns table (region text, delivered bigint)
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select q.job_data->>'region', count(*)
      from mysmshook.job_queue q
     where q.channel in ('sms', 'whatsapp') and q.status = 'completed'
       and q.created_at > now() - since and q.job_data ? 'region'
     group by 1
    having count(*) >= min_jobs
     order by 2 desc, 1;
$$;

create trigger geo_rules_changed
    after insert or update or delete or truncate on mysmshook.geo_rules
    for each statement execute function mysmshook.config_changed();
create trigger limits_changed
    after insert or update or delete or truncate on mysmshook.limits
    for each statement execute function mysmshook.config_changed();
create trigger sms_prices_changed
    after insert or update or delete or truncate on mysmshook.sms_prices
    for each statement execute function mysmshook.config_changed();

-- Geo rules, limits and prices are configuration: pg_dump keeps them. Counters are not.
select pg_catalog.pg_extension_config_dump('mysmshook.geo_rules', '');
select pg_catalog.pg_extension_config_dump('mysmshook.limits', '');
select pg_catalog.pg_extension_config_dump('mysmshook.sms_prices', '');
