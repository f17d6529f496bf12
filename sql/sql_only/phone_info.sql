-- mysmshook.phone_info for the SQL-only edition: what the extension's (Rust, the phonenumber
-- crate) says of a number in E.164 form, computed here from the same crate's metadata
-- (sql/sql_only/phone_metadata.sql, generated). It follows the crate's own steps, not
-- libphonenumber's Java ones, so that both editions agree number for number; the suite
-- compares them (tests/test_phone_info.py). Only "+" and digits are read: the extension also
-- parses spaces, punctuation and letters, which the hooks never pass (README, "Editions").
--
-- No SET clause on these functions: the SMS hook calls them on every sign-in and runs with
-- search_path = pg_catalog, pg_temp already, so built-in functions and operators are
-- pg_catalog's; mysmshook's names are qualified. No other role may call them. A SQL function
-- here must be one the planner inlines (a single expression, not strict): any other is parsed
-- and planned again at every call, which PL/pgSQL does once per session.

-- Whether a national number matches a region's general pattern (the crate's
-- Descriptor::is_match: one of the lengths, when there are any, and the pattern from the first
-- digit).
create function mysmshook.phone_matches(nsn text, lengths int[], pattern text) returns boolean
language sql immutable parallel safe
as $$
    select (cardinality(lengths) = 0 or length(nsn) = any (lengths)) and nsn ~ pattern;
$$;

-- Whether a national number is of a kind that makes it valid in a region (the crate's
-- number_type is not Unknown).
create function mysmshook.phone_is_known_kind(region mysmshook.phone_regions, nsn text)
returns boolean
language plpgsql stable strict parallel safe
as $$
begin
    if not mysmshook.phone_matches(nsn, region.lengths, region.pattern) then
        return false;
    end if;
    return exists (select from mysmshook.phone_number_kinds k
                    where k.calling_code = region.calling_code and k.position = region.position
                      and mysmshook.phone_matches(nsn, k.lengths, k.pattern));
end;
$$;

-- The region whose metadata applies to a national number (the crate's validator::source_for):
-- the only one of its calling code, or the first, in order, that it starts like or is a known
-- kind of number in. Null when none is.
create function mysmshook.phone_region_of(calling_code int, nsn text)
returns mysmshook.phone_regions
language plpgsql stable strict parallel safe
as $$
declare
    candidate mysmshook.phone_regions;
    only_one boolean := not exists (select from mysmshook.phone_regions r
                                     where r.calling_code = phone_region_of.calling_code and r.position = 1);
begin
    for candidate in
        select * from mysmshook.phone_regions r where r.calling_code = phone_region_of.calling_code
         order by r.position
    loop
        if only_one then
            return candidate;
        end if;
        if candidate.leading_digits is not null then
            if nsn ~ candidate.leading_digits then
                return candidate;
            end if;
        elsif mysmshook.phone_is_known_kind(candidate, nsn) then
            return candidate;
        end if;
    end loop;
    return null;
end;
$$;

create function mysmshook.phone_info(number text) returns mysmshook.phone_number
language plpgsql stable strict parallel safe
as $$
declare
    digits text;
    code int;
    nsn text;
    potential text;
    meta mysmshook.phone_regions;
    taken text[];
    transformed text;
    significant text;
    region mysmshook.phone_regions;
    original text;
    valid boolean;
begin
    if number !~ '^[+][0-9]*$' then
        return row(null, null, null, false,
                   'cannot be parsed: not in E.164 form (a + and digits only)')::mysmshook.phone_number;
    end if;
    digits := substr(number, 2);
    -- The crate's parser::parse, step by step, with its error messages.
    if length(digits) <= 2 then
        return row(null, null, null, false, 'cannot be parsed: not a number')::mysmshook.phone_number;
    end if;
    -- The shortest leading digits that are a calling code (none starts with 0).
    select r.calling_code into code
      from mysmshook.phone_regions r
     where left(digits, 1) <> '0' and r.position = 0
       and r.calling_code in (left(digits, 1)::int, left(digits, 2)::int, left(digits, 3)::int)
     order by r.calling_code
     limit 1;
    if code is null then
        return row(null, null, null, false, 'cannot be parsed: invalid country code')::mysmshook.phone_number;
    end if;
    nsn := substr(digits, length(code::text) + 1);
    original := nsn;

    -- The national prefix comes off, as the crate takes it off, unless what remains would be
    -- too short for the region.
    meta := mysmshook.phone_region_of(code, ltrim(nsn, '0'));
    if meta.calling_code is not null then
        potential := nsn;
        if meta.prefix_for_parsing is null then
            if starts_with(potential, meta.national_prefix) then
                potential := substr(potential, length(meta.national_prefix) + 1);
            end if;
        else
            taken := regexp_match(potential, meta.prefix_for_parsing);
            if taken is not null then
                if meta.prefix_transform is null or taken[cardinality(taken)] is null then
                    potential := substr(potential, length(taken[1]) + 1);
                else
                    transformed := regexp_replace(potential, meta.prefix_for_parsing, meta.prefix_transform);
                    if not mysmshook.phone_matches(potential, meta.lengths, meta.pattern)
                       or mysmshook.phone_matches(transformed, meta.lengths, meta.pattern) then
                        potential := transformed;
                    end if;
                end if;
            end if;
        end if;
        if starts_with(potential, meta.national_prefix) then
            potential := substr(potential, length(meta.national_prefix) + 1);
        end if;
        if cardinality(meta.lengths) = 0
           or length(potential) = any (meta.local_lengths)
           or length(potential) >= meta.lengths[1] then
            nsn := potential;
        end if;
    end if;

    if length(nsn) < 2 then
        return row(null, null, null, false,
                   'cannot be parsed: the number is too short after the country code')::mysmshook.phone_number;
    end if;
    if length(nsn) > 17 then
        return row(null, null, null, false, 'cannot be parsed: the number is too long')::mysmshook.phone_number;
    end if;
    significant := ltrim(nsn, '0');
    if significant = '' then
        return row(null, null, null, false,
                   'cannot be parsed: malformed integer part in phone number: cannot parse integer from empty string'
                  )::mysmshook.phone_number;
    end if;
    if significant::numeric >= 72057594037927936 then  -- 2^56, the crate's limit
        return row(null, null, null, false, 'cannot be parsed: the number is too long')::mysmshook.phone_number;
    end if;

    -- The crate finds the region from the number without its leading zeros and judges validity
    -- by the region found with them; most numbers have none and keep what the prefix step found.
    if significant <> ltrim(original, '0') then
        meta := mysmshook.phone_region_of(code, significant);
    end if;
    region := meta;
    if nsn <> significant then
        meta := mysmshook.phone_region_of(code, nsn);
    end if;
    valid := coalesce(mysmshook.phone_is_known_kind(meta, nsn), false);
    return row('+' || code || nsn, code, nullif(region.region, '001'), valid,
               case when not valid then 'is not a valid number for its country (libphonenumber)' end
              )::mysmshook.phone_number;
end;
$$;
comment on function mysmshook.phone_info(text) is
    'What libphonenumber''s metadata says of a number in E.164 form: the SQL-only edition''s implementation of the extension''s Rust function.';
