#!/usr/bin/env python3
"""Writes observability/grafana-dashboard.json, warren's Grafana dashboard.

Edit the panels here and run `python3 observability/gen_dashboard.py`;
the JSON is checked in so that operators can import it as it is.
"""
import json
import os

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
Q = 'queue=~"$queue"'


def panel(pid, title, exprs, unit, x, y, w=12, h=8, kind="timeseries", desc=""):
    return {
        "id": pid, "type": kind, "title": title, "description": desc, "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
        "targets": [{"refId": chr(65 + i), "datasource": DS, "expr": e, "legendFormat": l}
                    for i, (e, l) in enumerate(exprs)],
    }


def row(pid, title, y):
    return {"id": pid, "type": "row", "title": title, "collapsed": False,
            "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []}


panels = [
    row(1, "Throughput and outcomes", 0),
    panel(2, "Messages settled by outcome", [(f'sum by (outcome) (rate(warren_messages_total{{{Q}}}[$__rate_interval]))', "{{outcome}}")], "ops", 0, 1,
          desc="warren_messages_total: ack, retry, dead_letter, duplicate, discard, requeue."),
    panel(3, "Handler duration (delivery to settlement)", [
        (f'histogram_quantile(0.5, sum by (le) (rate(warren_handler_duration_seconds_bucket{{{Q}}}[$__rate_interval])))', "p50"),
        (f'histogram_quantile(0.99, sum by (le) (rate(warren_handler_duration_seconds_bucket{{{Q}}}[$__rate_interval])))', "p99")], "s", 12, 1),
    panel(4, "In flight", [(f'sum by (queue) (warren_messages_in_flight{{{Q}}})', "{{queue}}")], "short", 0, 9),
    panel(5, "Retries by tier", [(f'sum by (queue, tier) (rate(warren_retries_total{{{Q}}}[$__rate_interval]))', "{{queue}} {{tier}}")], "ops", 12, 9),
    row(6, "Lag: where messages wait", 17),
    panel(7, "Messages ready (queue, retry tiers, DLQ)", [('sum by (queue) (warren_queue_messages_ready{queue=~"($queue)(\\\\..*)?"})', "{{queue}}")], "short", 0, 18,
          desc="Polled with passive declares every WARREN_LAG_INTERVAL (15s by default)."),
    panel(8, "Time in queue before a handler started", [
        (f'histogram_quantile(0.5, sum by (le) (rate(warren_queue_wait_seconds_bucket{{{Q}}}[$__rate_interval])))', "p50"),
        (f'histogram_quantile(0.9, sum by (le) (rate(warren_queue_wait_seconds_bucket{{{Q}}}[$__rate_interval])))', "p90"),
        (f'histogram_quantile(0.99, sum by (le) (rate(warren_queue_wait_seconds_bucket{{{Q}}}[$__rate_interval])))', "p99")], "s", 12, 18,
          desc="From the message's AMQP timestamp (whole seconds), first deliveries only."),
    panel(9, "Consumers", [('max by (queue) (warren_queue_consumers{queue=~"$queue"})', "{{queue}}")], "short", 0, 26),
    panel(10, "Queue poll errors", [('sum by (queue) (rate(warren_queue_poll_errors_total[$__rate_interval]))', "{{queue}}")], "ops", 12, 26),
    row(11, "Dead letters", 34),
    panel(12, "Dead letters by reason", [(f'sum by (queue, reason) (rate(warren_dead_letters_total{{{Q}}}[$__rate_interval]))', "{{queue}} {{reason}}")], "ops", 0, 35),
    panel(13, "Oldest dead letter", [(f'max by (queue) (warren_dead_letter_oldest_age_seconds{{{Q}}})', "{{queue}}")], "s", 12, 35,
          desc="How long the queue's .dlq has held messages without being emptied."),
    row(14, "Dedupe, broker and health", 43),
    panel(15, "Duplicates and in-progress copies", [
        (f'sum by (queue) (rate(warren_duplicates_total{{{Q}}}[$__rate_interval]))', "duplicates {{queue}}"),
        (f'sum by (queue) (rate(warren_in_progress_total{{{Q}}}[$__rate_interval]))', "in progress {{queue}}")], "ops", 0, 44),
    panel(16, "Ready and dedupe store up", [
        ('min by (instance) (warren_ready)', "ready {{instance}}"),
        ('min by (instance) (warren_dedupe_store_up)', "store up {{instance}}")], "short", 12, 44),
    panel(17, "Publishes", [
        ('sum(rate(warren_publish_confirms_total[$__rate_interval]))', "confirmed"),
        ('sum(rate(warren_publish_nacks_total[$__rate_interval]))', "nacked"),
        ('sum(rate(warren_publish_returns_total[$__rate_interval]))', "returned")], "ops", 0, 52),
    panel(18, "Reconnects", [('sum by (instance) (increase(warren_reconnects_total[$__rate_interval]))', "{{instance}}")], "short", 12, 52),
]

dashboard = {
    "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"}],
    "__requires": [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
                   {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"}],
    "uid": "warren-workers", "title": "warren workers", "tags": ["warren", "rabbitmq"],
    "schemaVersion": 38, "version": 1, "editable": True, "refresh": "30s",
    "time": {"from": "now-3h", "to": "now"},
    "templating": {"list": [{
        "name": "queue", "label": "queue", "type": "query", "datasource": DS,
        "query": {"query": "label_values(warren_messages_total, queue)", "refId": "queue"},
        "definition": "label_values(warren_messages_total, queue)",
        "multi": True, "includeAll": True, "allValue": ".*", "refresh": 2,
        "current": {"selected": True, "text": "All", "value": "$__all"}}]},
    "annotations": {"list": []},
    "panels": panels,
}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grafana-dashboard.json")
with open(out, "w") as f:
    json.dump(dashboard, f, indent=2)
    f.write("\n")
