// The cloudstack-job-exporter monitoring mixin: _config, prometheusRules (recording rules),
// prometheusAlerts and grafanaDashboards, as celery-mixin and node-mixin lay them out.
(import 'config.libsonnet') +
(import 'rules.libsonnet') +
(import 'alerts.libsonnet') +
(import 'dashboards/dashboards.libsonnet')
