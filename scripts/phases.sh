# Sourced by demo.sh and test.sh: numbered phase lines, each with what it runs and how long it usually takes,
# the time each took, and on failure a last line that names the failed phase and its command.
#   phases_begin TOTAL; phase "name: command" "usually ..."; ...; phases_end
# (Bash only; relies on set -E so the ERR trap also fires inside functions.)
set -E
phase_index=0
phase_total=0
phase_name=""
phase_started=$SECONDS
phase_log=()

phase_duration() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

phase_close() {
  if [[ -n $phase_name ]]; then
    phase_log+=("[$phase_index/$phase_total] $phase_name: $(phase_duration $((SECONDS - phase_started)))")
  fi
}

phases_begin() {
  phase_total=$1
  trap 'phase_failed $? "$BASH_COMMAND"' ERR
}

phase() { # "what: command" "how long it usually takes"
  phase_close
  phase_index=$((phase_index + 1))
  phase_name=$1
  phase_started=$SECONDS
  printf '\n== [%d/%d] %s (%s)\n' "$phase_index" "$phase_total" "$1" "$2"
}

phases_end() {
  phase_close
  phase_name=""
  printf '\n== phase times\n'
  printf '   %s\n' "${phase_log[@]}"
}

phase_failed() { # exit status, command
  trap - ERR
  printf '\n== FAILED in phase [%d/%d] %s after %s: `%s` exited with status %d (its output is just above)\n' \
    "$phase_index" "$phase_total" "${phase_name:-setup}" "$(phase_duration $((SECONDS - phase_started)))" "$2" "$1" >&2
  exit "$1"
}

phase_fail() { # message: fails the current phase with this reason
  trap - ERR
  printf '\n== FAILED in phase [%d/%d] %s after %s: %s\n' "$phase_index" "$phase_total" "${phase_name:-setup}" \
    "$(phase_duration $((SECONDS - phase_started)))" "$1" >&2
  exit 1
}
