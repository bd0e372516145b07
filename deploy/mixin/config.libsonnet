// Everything an operator may want to change. Override it from your own jsonnet:
//   (import 'cloudstack-job-exporter-mixin/mixin.libsonnet') + { _config+:: { backlogJobs: 500 } }
{
  _config+:: {
    // Selects the exporter's scrape job (the Prometheus `job` label, not a CloudStack job).
    exporterSelector: 'job="cloudstack-job-exporter"',

    // Each alert's runbook_url is this page plus the anchor of the alert's heading.
    runbookBaseURL: 'https://github.com/cloudstack-job-exporter/cloudstack-job-exporter/blob/main/docs/operations.md',

    exporterDownFor: '5m',
    exporterAbsentFor: '15m',
    apiUnreachableFor: '5m',
    // A poll loop that stopped succeeding (or stopped running) for this long is stale.
    pollStaleSeconds: 600,
    pollStaleFor: '2m',
    authFailingFor: '5m',
    // A failed job keeps its alert firing for this window after it was seen to fail.
    jobFailedWindow: '15m',
    failureRatio: 0.25,
    failureRatioMinJobs: 10,
    failureRatioWindow: '30m',
    failureRatioFor: '15m',
    // Well below CloudStack's job.cancel.threshold.minutes (60): there is time to act.
    pendingTooLongSeconds: 1800,
    pendingTooLongFor: '1m',
    backlogJobs: 100,
    backlogFor: '15m',
    capacityWindow: '15m',
    capacityResultCodes: ['533', '534', '535'],
    trackingCapWindow: '15m',
    malformedJobsWindow: '15m',
    configReloadFailedFor: '10m',
    stateWriteWindow: '15m',
    // The event stream (clouds with `events` configured).
    eventStreamDownFor: '10m',
    eventGapsWindow: '30m',
    // No event for this long while polling sees jobs end: CloudStack is not publishing.
    eventSilenceSeconds: 1800,
    eventSilenceWindow: '30m',
    durationQuantiles: [0.5, 0.9, 0.99],
    durationQuantileWindow: '30m',

    // Grafana.
    dashboardUid: 'cloudstack-async-jobs',
    dashboardTitle: 'CloudStack async jobs',
    dashboardTags: ['cloudstack', 'cloudstack-job-exporter'],
    dashboardRefresh: '30s',
    dashboardTimezone: 'browser',
    dashboardFrom: 'now-6h',
    // The data source the dashboard's `datasource` variable starts on; '' lets Grafana pick
    // its default Prometheus data source.
    datasource: '',
  },
}
