{
  grafanaDashboards+:: {
    'cloudstack-job-exporter.json': (import 'cloudstack-job-exporter.libsonnet')($._config),
  },
}
