#!/bin/sh
# Runs each test binary given as an argument from the repository root, echoes its
# output, and sums cmocka's "[  PASSED  ] N test(s)" / "[  FAILED  ] N test(s)"
# lines into one final "N passed, N failed" line. Exits 1 if anything failed or a
# binary crashed.
passed=0; failed=0; skipped=0; status=0
for t in "$@"; do
  out=$("$t" 2>&1); rc=$?
  printf '%s\n' "$out"
  p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -n1)
  f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -n1)
  s=$(printf '%s\n' "$out" | sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' | tail -n1)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
  if [ "$rc" -ne 0 ]; then
    status=1
    if [ -z "$f" ] || [ "$f" -eq 0 ]; then
      echo "$t: exited with status $rc"; failed=$((failed + 1))
    fi
  fi
done
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
