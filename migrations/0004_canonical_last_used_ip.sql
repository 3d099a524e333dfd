-- Until this release, Verify recorded the caller's client_ip string as it
-- came, at any length (markup, control characters, 300 kB strings). Verify
-- now records only canonical addresses (IPv4 dotted quads, IPv6 compressed
-- and lower-case) or nothing; what was stored before and is not of that
-- form is cleared, and the column is bounded so that no later bug can store
-- such a value again (a usage write that tried would be refused and its
-- entry dropped, see src/usage/UsageRecorder.ts).
update keyward.key_usage
   set last_used_ip = null
 where last_used_ip is not null
   and last_used_ip !~ '^[0-9a-f:.]{1,45}$';

alter table keyward.key_usage
  add constraint key_usage_last_used_ip_canonical check (last_used_ip ~ '^[0-9a-f:.]{1,45}$');
