-- The refusal audit's summary, in the extension: its refusals() reads the audit file that
-- record_refusal (src/defence.rs) appends to. The SQL-only edition writes refusals to the server
-- log instead (sql/sql_only/refusal_audit.sql) and has no such view.

-- What fired, by rule, region and hour, from the audit log: many destinations from few IPs, or
-- sequential numbers of one prefix, is an attacker; one destination refused a few times is a
-- person asking again. mysmshook.refusals() has every refusal (masked destination, IP, time).
create view mysmshook.refusal_summary as
select r.rule, r.region, date_trunc('hour', r.refused_at) as hour, count(*) as refusals,
       count(distinct r.destination) as destinations, count(distinct r.ip) as ips,
       min(r.refused_at) as first_at, max(r.refused_at) as last_at
  from mysmshook.refusals() r
 group by 1, 2, 3
 order by 3 desc, 4 desc;
comment on view mysmshook.refusal_summary is
    'SMS hook refusals per rule, region and hour (from mysmshook.refusals(), the audit log).';
