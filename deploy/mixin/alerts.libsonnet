// The alerts. To add one, append an entry to `alerts` below: name, expr, for ('0m' for none),
// severity, summary, description and runbook (the text of its section in docs/operations.md,
// which the renderer writes). Then add a promtool test in deploy/prometheus/tests/.
local promql = import 'lib/promql.libsonnet';
local finished = 'cloudstack_async_jobs_finished_total';

{
  local c = $._config,
  local failed = finished + '{status="failed"}',
  local capacity = finished + '{status="failed", result_code=~"%s"}' % std.join('|', c.capacityResultCodes),

  // The latest failed jobs of the alert's (cloud, cmd, result_code), from the per-job series
  // when they are on; the alert itself rests on the low-cardinality counter.
  local latestFailures =
    '{{- with printf `topk(3, (cloudstack_async_job_info{cloud=%q, cmd=%q}'
    + ' * on (cloud, job_id) group_left cloudstack_async_job_completed_timestamp_seconds)'
    + ' and on (cloud, job_id) (cloudstack_async_job_status == 2'
    + ' and cloudstack_async_job_result_code == %s))`'
    + ' $labels.cloud $labels.cmd $labels.result_code | query }}\nLatest:'
    + '{{ range . }} {{ .Labels.job_id }}'
    + '{{ if .Labels.error }} ({{ .Labels.error }}){{ end }};{{ end }}{{ end }}',
  local oldestPending =
    '{{- with printf `topk(3, cloudstack_async_job_age_seconds{cloud=%q, cmd=%q}'
    + ' and on (cloud, job_id) cloudstack_async_job_status == 0)`'
    + ' $labels.cloud $labels.cmd | query }}\nOldest:'
    + '{{ range . }} {{ .Labels.job_id }} ({{ humanizeDuration .Value }});{{ end }}{{ end }}',

  alerts:: [
    {
      name: 'CloudStackJobExporterDown',
      expr: 'up{%s} == 0' % c.exporterSelector,
      'for': c.exporterDownFor,
      severity: 'warning',
      summary: 'The CloudStack job exporter {{ $labels.instance }} cannot be scraped.',
      description: 'Prometheus has failed to scrape {{ $labels.instance }} for '
                   + c.exporterDownFor + ': CloudStack async jobs of the clouds it polls are not monitored.',
      runbook: 'Check the process (systemctl status cloudstack-job-exporter, kubectl get pods) and '
               + 'its logs. A configuration error makes it exit with a one-line reason; '
               + '`cloudstack-job-exporter --config.check` validates the file. Check that '
               + '/-/healthy answers from the Prometheus host (firewall, TLS, basic auth of '
               + '--web.config.file).',
    },
    {
      name: 'CloudStackJobExporterAbsent',
      expr: 'absent(up{%s})' % c.exporterSelector,
      'for': c.exporterAbsentFor,
      severity: 'warning',
      summary: 'No CloudStack job exporter target is known to Prometheus.',
      description: 'Prometheus has had no target matching %s for %s.' % [c.exporterSelector, c.exporterAbsentFor],
      runbook: 'The scrape configuration lost the exporter: check the scrape job name, the '
               + 'ServiceMonitor selector and labels, or service discovery. If the scrape job has '
               + 'another name, set exporterSelector in the _config of the monitoring mixin.',
    },
    {
      name: 'CloudStackAPIUnreachable',
      expr: 'cloudstack_up == 0',
      'for': c.apiUnreachableFor,
      severity: 'critical',
      summary: 'The CloudStack API of cloud {{ $labels.cloud }} does not answer the exporter.',
      description: 'Every poll of cloud {{ $labels.cloud }} by {{ $labels.instance }} has failed for '
                   + c.apiUnreachableFor + '. Jobs are not being tracked.',
      runbook: 'Look at cloudstack_api_requests_total{cloud="..."} by code: `error` means '
               + 'transport (DNS, TLS, connection refused, timeout), 5xx means the management '
               + 'server failed, 401 means credentials (see CloudStackAPIAuthenticationFailing). '
               + "Check the management servers and their load balancer from the exporter's host "
               + 'with curl on the configured url.',
    },
    {
      name: 'CloudStackJobExporterPollsStale',
      expr: 'time() - cloudstack_exporter_last_successful_poll_timestamp_seconds > '
            + promql.num(c.pollStaleSeconds),
      'for': c.pollStaleFor,
      severity: 'warning',
      summary: 'The exporter has not polled cloud {{ $labels.cloud }} successfully for '
               + '{{ $value | humanizeDuration }}.',
      description: 'The last successful poll of cloud {{ $labels.cloud }} by {{ $labels.instance }} '
                   + 'is {{ $value | humanizeDuration }} old: job metrics are out of date.',
      runbook: 'If CloudStackAPIUnreachable fires too, follow it. Otherwise a poll cycle hangs or '
               + 'takes longer than the poll interval: compare cloudstack_exporter_poll_duration_'
               + 'seconds with the poll interval, look for 429 (throttling) in '
               + "cloudstack_api_requests_total, and read the exporter's logs.",
    },
    {
      name: 'CloudStackAPIAuthenticationFailing',
      expr: 'sum by (cloud) (\n'
            + '    rate(cloudstack_api_requests_total{code="401"}[5m])\n'
            + '  or\n'
            + '    rate(cloudstack_api_requests_total{code="531", command="login"}[5m])\n'
            + ') > 0',
      'for': c.authFailingFor,
      severity: 'critical',
      summary: "CloudStack refuses the exporter's credentials for cloud {{ $labels.cloud }}.",
      description: 'API calls to cloud {{ $labels.cloud }} fail with 401 (or 531 on login) for '
                   + c.authFailingFor + '.',
      runbook: 'The API key or secret key was regenerated, the user or account is disabled, or '
               + "the exporter's clock is off (signature version 3 `expires` is checked by the "
               + 'server: run NTP). Update the Secret or credential file and reload (SIGHUP) or '
               + 'restart the exporter.',
    },
    {
      name: 'CloudStackAsyncJobFailed',
      expr: 'sum by (cloud, cmd, result_code) %s > 0' % promql.newOrIncreased(failed, c.jobFailedWindow),
      'for': '0m',
      severity: 'warning',
      summary: '{{ $labels.cmd }} jobs failed on cloud {{ $labels.cloud }} '
               + '(result code {{ $labels.result_code }}).',
      description: '{{ printf "%.0f" $value }} {{ $labels.cmd }} job(s) failed on cloud '
                   + '{{ $labels.cloud }} with result code {{ $labels.result_code }} in the last '
                   + c.jobFailedWindow + '.' + latestFailures,
      runbook: 'Find the job with listAsyncJobs/queryAsyncJobResult or in the management server '
               + 'log (grep the job id). Result code 530 is an internal error, 530 without '
               + 'errortext a job killed by a management-server restart, 0 a job cancelled by '
               + 'job.cancel.threshold.minutes, 533-535 capacity (see CloudStackCapacityErrors).',
    },
    {
      name: 'CloudStackAsyncJobFailureRatioHigh',
      expr: 'cloud_cmd:cloudstack_async_jobs_failed:ratio_rate%s > %s\n' % [c.failureRatioWindow, promql.num(c.failureRatio)]
            + 'and\ncloud_cmd:cloudstack_async_jobs_finished:increase%s >= %s'
              % [c.failureRatioWindow, promql.num(c.failureRatioMinJobs)],
      'for': c.failureRatioFor,
      severity: 'critical',
      summary: 'Many {{ $labels.cmd }} jobs fail on cloud {{ $labels.cloud }}.',
      description: '{{ $value | humanizePercentage }} of the {{ $labels.cmd }} jobs that finished on '
                   + 'cloud {{ $labels.cloud }} in the last ' + c.failureRatioWindow + ' failed.',
      runbook: 'A whole class of operations is failing: look at the failures by result code on '
               + 'the dashboard. Many 530s point at the management server or a hypervisor/storage '
               + 'backend; 533-535 at capacity; 431 at a client sending bad parameters. Check the '
               + 'management server log for the command.',
    },
    {
      name: 'CloudStackAsyncJobPendingTooLong',
      expr: 'cloudstack_async_jobs_oldest_pending_age_seconds > ' + promql.num(c.pendingTooLongSeconds),
      'for': c.pendingTooLongFor,
      severity: 'warning',
      summary: 'A {{ $labels.cmd }} job on cloud {{ $labels.cloud }} has been pending for '
               + '{{ $value | humanizeDuration }}.',
      description: 'The oldest pending {{ $labels.cmd }} job on cloud {{ $labels.cloud }} is '
                   + '{{ $value | humanizeDuration }} old. CloudStack fails jobs blocking a queue after '
                   + 'job.cancel.threshold.minutes (60 by default).' + oldestPending,
      runbook: 'Find the job (queryAsyncJobResult jobid=...), its instance and management server '
               + '(managementserverid). A job stuck behind another on the same instance\'s queue, a '
               + 'hypervisor host not answering, or a management server in trouble are the usual '
               + 'causes. The job fails on its own at job.cancel.threshold.minutes.',
    },
    {
      name: 'CloudStackAsyncJobBacklogHigh',
      expr: 'sum by (cloud) (cloudstack_async_jobs{status="pending"}) > ' + promql.num(c.backlogJobs),
      'for': c.backlogFor,
      severity: 'warning',
      summary: '{{ $value }} async jobs are pending on cloud {{ $labels.cloud }}.',
      description: 'More than %s jobs have been pending on cloud {{ $labels.cloud }} for %s.'
                   % [promql.num(c.backlogJobs), c.backlogFor],
      runbook: 'Jobs are submitted faster than they finish. See the pending jobs by command and '
               + "by management server on the dashboard; check the management servers' job "
               + 'executor pools and the hypervisors they wait for.',
    },
    {
      name: 'CloudStackCapacityErrors',
      expr: 'sum by (cloud, cmd, result_code) %s > 0' % promql.newOrIncreased(capacity, c.capacityWindow),
      'for': '0m',
      severity: 'warning',
      summary: 'Cloud {{ $labels.cloud }} is short of capacity ({{ $labels.cmd }} failed with '
               + '{{ $labels.result_code }}).',
      description: '{{ printf "%.0f" $value }} {{ $labels.cmd }} job(s) on cloud {{ $labels.cloud }} '
                   + 'failed with result code {{ $labels.result_code }} (533 insufficient capacity, 534 '
                   + 'resource unavailable, 535 resource allocation error) in the last '
                   + c.capacityWindow + '.',
      runbook: 'Check the capacity of zones, pods, clusters and primary storage (listCapacity, '
               + 'the dashboard of CloudStack), hosts in maintenance or disconnected, and '
               + 'disabled pods or clusters. Add capacity or free it.',
    },
    {
      name: 'CloudStackJobExporterTrackingCapReached',
      expr: 'sum by (cloud) %s > 0'
            % promql.newOrIncreased('cloudstack_exporter_jobs_dropped_total{reason="capacity"}', c.trackingCapWindow),
      'for': '0m',
      severity: 'warning',
      summary: 'The exporter drops jobs of cloud {{ $labels.cloud }}: its tracking cap is reached.',
      description: 'The exporter dropped jobs of cloud {{ $labels.cloud }} in the last '
                   + c.trackingCapWindow + ' because it tracks as many jobs as it may.',
      runbook: 'Raise the tracked-jobs cap (and the memory limit with it), shorten the retention '
               + 'of finished jobs, narrow discovery with include/exclude patterns, or run one '
               + 'exporter per cloud.',
    },
    {
      // A cloud whose answers are partly unreadable keeps cloudstack_up at 1: only this
      // counter shows it.
      name: 'CloudStackJobExporterMalformedJobs',
      expr: 'sum by (cloud) %s > 0'
            % promql.newOrIncreased('cloudstack_exporter_malformed_jobs_total', c.malformedJobsWindow),
      'for': '0m',
      severity: 'warning',
      summary: 'The exporter skips unreadable job entries of cloud {{ $labels.cloud }}.',
      description: '{{ printf "%.0f" $value }} job entries of cloud {{ $labels.cloud }} could not be '
                   + 'read in the last ' + c.malformedJobsWindow + ' and were skipped: cloudstack_up stays 1 '
                   + 'but those jobs are not tracked.',
      runbook: "The exporter's log names the field it could not read (missing jobid, unknown "
               + 'jobstatus, bad date). Compare with the listAsyncJobs answer of the cloud (a proxy '
               + 'rewriting the answer, a CloudStack version with another format) and report the '
               + 'entry if CloudStack sends it as is.',
    },
    {
      name: 'CloudStackJobExporterConfigReloadFailed',
      expr: 'cloudstack_exporter_config_last_reload_successful == 0',
      'for': c.configReloadFailedFor,
      severity: 'warning',
      summary: 'The exporter {{ $labels.instance }} refused its new configuration.',
      description: 'The last reload (SIGHUP) of the configuration of {{ $labels.instance }} failed '
                   + c.configReloadFailedFor + ' ago or more: the previous configuration still runs, '
                   + 'and the next restart would fail.',
      runbook: "The exporter's log line `configuration reload refused` names every problem with "
               + 'its key path; `cloudstack-job-exporter --config.check` shows them too. Fix the '
               + 'file and reload again (systemctl reload, or SIGHUP).',
    },
    {
      name: 'CloudStackJobExporterStateNotSaved',
      expr: 'sum by (instance) %s > 0'
            % promql.newOrIncreased('cloudstack_exporter_state_write_failures_total', c.stateWriteWindow),
      'for': '0m',
      severity: 'warning',
      summary: 'The exporter {{ $labels.instance }} cannot write its state file.',
      description: 'Writes of the state file of {{ $labels.instance }} failed in the last '
                   + c.stateWriteWindow + ': a restart would forget which jobs were seen pending, '
                   + 'and jobs that finish meanwhile would not be counted.',
      runbook: "The exporter's log says why (`cannot write state file: ...`): a full disk, a "
               + 'read-only or missing directory (the systemd unit writes only its '
               + 'StateDirectory; in Kubernetes, the volume). `--config.check` checks that the '
               + 'directory exists and is writable.',
    },
    {
      name: 'CloudStackEventStreamDisconnected',
      expr: 'cloudstack_exporter_events_connected == 0',
      'for': c.eventStreamDownFor,
      severity: 'warning',
      summary: 'The exporter is not connected to the event bus of cloud {{ $labels.cloud }}.',
      description: 'The AsyncJobEvent stream of cloud {{ $labels.cloud }} has been down for '
                   + c.eventStreamDownFor + ' on {{ $labels.instance }}: jobs shorter than a poll '
                   + 'are not counted, and ends show at the next poll only.',
      runbook: "The exporter's log says why (`event stream unavailable: ...`), and so does the "
               + 'cloud\'s box on its /jobs page: the broker refusing the credentials, a TLS '
               + 'failure, the broker down, or 406 PRECONDITION_FAILED (an exchange or queue '
               + 'declared elsewhere with other parameters: the exchange must be topic and durable '
               + 'as CloudStack declares it). Polling goes on meanwhile; the durable queue keeps '
               + 'what CloudStack publishes until the exporter is back (up to its length cap and '
               + 'expiry).',
    },
    {
      name: 'CloudStackEventGaps',
      expr: 'sum by (cloud) %s > 0'
            % promql.newOrIncreased('cloudstack_exporter_event_gaps_total', c.eventGapsWindow),
      'for': '0m',
      severity: 'warning',
      summary: 'AsyncJobEvents of cloud {{ $labels.cloud }} are being lost.',
      description: '{{ printf "%.0f" $value }} jobs of cloud {{ $labels.cloud }} were found by '
                   + 'polling in the last ' + c.eventGapsWindow + ' although their submit event never '
                   + 'arrived while the stream was connected: short jobs may go uncounted.',
      runbook: 'CloudStack drops an event when it cannot reach the broker (no buffer, no retry) '
               + 'and when no queue is bound: check the management servers\' logs for event bus '
               + 'warnings, that every management server has the event bus configured (a server '
               + 'without it publishes nothing for the jobs it runs), and the queue\'s length cap '
               + '(queue_max_length: the broker drops the oldest events beyond it).',
    },
    {
      name: 'CloudStackEventStreamSilent',
      expr: '(max by (cloud) (cloudstack_exporter_events_connected) == 1)\n'
            + 'unless on (cloud)\n'
            + '  (min by (cloud) (time() - cloudstack_exporter_last_event_timestamp_seconds) <= %s)\n'
            % promql.num(c.eventSilenceSeconds)
            + 'and on (cloud)\n'
            + '  (sum by (cloud) (increase(cloudstack_exporter_jobs_finished_by_source_total{source=~"list|query"}[%s])) > 0)'
            % c.eventSilenceWindow,
      'for': '0m',
      severity: 'warning',
      summary: 'Cloud {{ $labels.cloud }} publishes no AsyncJobEvent although its jobs run.',
      description: 'The exporter is connected to the event bus of cloud {{ $labels.cloud }} but has '
                   + 'received no event for ' + c.eventSilenceWindow + ' while polling saw jobs end: '
                   + 'CloudStack is not publishing to the exchange the exporter reads.',
      runbook: 'CloudStack publishes only where an administrator configured the RabbitMQ event bus '
               + 'on every management server (see "Making CloudStack publish its job events"), '
               + 'to the exchange named there: compare it with the exporter\'s events.exchange, '
               + 'and the broker\'s virtual host with the one in events.url.',
    },
  ],

  // A Prometheus rule from an entry above; runbook_url is the anchor GitHub gives the alert's
  // heading (### <name>) in docs/operations.md.
  local rule(a) = {
    alert: a.name,
    expr: a.expr,
    labels: { severity: a.severity },
    annotations: {
      summary: a.summary,
      description: a.description,
      runbook: a.runbook,
      runbook_url: '%s#%s' % [c.runbookBaseURL, std.asciiLower(a.name)],
    },
  } + (if a['for'] != '0m' then { 'for': a['for'] } else {}),

  prometheusAlerts+:: {
    groups+: [
      {
        name: 'cloudstack-job-exporter.alerts',
        rules: [rule(a) for a in $.alerts],
      },
    ],
  },
}
