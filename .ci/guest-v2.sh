#!/usr/bin/env bash
# The runtime's limit and jail tests again in a cgroup v2 kernel (this machine's kernel
# mounts v1; every current distribution boots v2): Debian's generic kernel booted under
# QEMU without KVM (nested KVM hangs here) by virtme-ng, on a read-only view of this
# machine's root, with the same test binary. BATON_EXPECT_LIMITS=cgroup-v2 makes a test
# that found any other mechanism fail, so this step cannot pass on a fallback.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
ls /boot/vmlinuz-* >/dev/null 2>&1 || missing+=(linux-image-amd64)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v slirp4netns >/dev/null 2>&1 || missing+=(slirp4netns)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]} for the cgroup v2 guest"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
venv=.ci/.venv
[ -x "$venv/bin/python" ] || bash .ci/venv.sh
if [ ! -x "$venv/bin/vng" ]; then
  "$venv/bin/pip" install -q "virtme-ng==1.42"
fi

kernel=$(ls /boot/vmlinuz-* | sort -V | tail -1)
# The test binaries CI has just built (package, test target).
binary() {
  cargo test -p "$1" --test "$2" --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$2"
}
runtime=$(binary baton-runtime runtime)
hostile=$(binary baton-cli hostile)
[ -x "$runtime" ] && [ -x "$hostile" ] || { echo "no test binaries"; exit 1; }

# The limits (memory OOM, pids, CPU quota, each worker's group removed with it, stale
# groups reclaimed, forked workers' own groups), the jail and its system-call filter, the
# private shaped network, and a function that attacks its server. Tests whose deadlines assume a real CPU (a 300 ms
# start, 200 forks in 2.5 s) stay on the host: Python starts about 40 times slower here.
tests="process::memory_beyond_the_limit_fails_and_the_host_survives
process::a_crashed_worker_is_reported_and_replaced
process::the_cost_of_a_move_into_groups_is_measured_and_leaves_nothing
sandbox::a_worker_cannot_fork_past_its_process_limit
sandbox::a_workers_cpu_quota_throttles_it_and_its_groups_go_with_it
sandbox::a_start_removes_the_groups_a_killed_predecessor_left
sandbox::every_escape_attempt_fails
sandbox::a_reserved_bandwidth_is_a_shaped_private_network
sandbox::workers_forked_from_a_template_are_jailed_limited_and_unique"
log=$(mktemp)
start=$(date +%s)
echo "== cgroup v2 guest: $kernel"
# The private network's interface needs the TUN device (a module in Debian's kernel).
run="modprobe tun && cd $PWD && export BATON_EXPECT_LIMITS=cgroup-v2"
run="$run && $runtime --exact $(echo $tests) --test-threads 2 --nocapture 2>&1"
run="$run && $hostile a_function_that_closes_its_pipe_or_kills_its_template --nocapture 2>&1"
"$venv/bin/vng" --run "$kernel" --disable-kvm --memory 2G --cpus 2 \
  --exec "$run; echo guest-exit=\$?" >"$log" 2>&1 || true
echo "== cgroup v2 guest took $(( $(date +%s) - start )) s"
grep -E "^(test |limits: |path: |test result)" "$log" || true
if ! grep -q "^guest-exit=0" "$log" || [ "$(grep -c "^test result: ok" "$log")" != 2 ]; then
  echo "== the cgroup v2 guest run failed; its whole output:"
  cat "$log"
  exit 1
fi
