#!/bin/sh
# A warren run handler in plain shell. The message body is on standard
# input; its metadata is in WARREN_MSG_* variables. Exit 0 acks, exit 65
# dead-letters, any other exit retries through the delay tiers.
body=$(cat)
echo "handling $WARREN_MSG_MESSAGE_ID (attempt $WARREN_MSG_ATTEMPT): $body" >&2
case "$body" in
  *invalid*) echo "cannot handle: $body" >&2; exit 65 ;;
  *flaky*) [ "$WARREN_MSG_ATTEMPT" -ge 2 ] || { echo "not yet" >&2; exit 1; } ;;
esac
if [ -n "$HANDLED_LOG" ]; then
  echo "$WARREN_MSG_MESSAGE_ID $WARREN_MSG_ATTEMPT $body" >> "$HANDLED_LOG"
fi
exit 0
