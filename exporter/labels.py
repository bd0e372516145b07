"""Label text of the per-job series: escaping for both exposition formats, and the labels of
`cloudstack_async_job_info`. The tracker pre-renders these when a job changes and the renderer
writes them out, so both import them from here (a leaf: nothing of the exporter below it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exporter.jobs import Job


def escape_label_value(value: str) -> str:
    """A label value for both text formats: backslash, double quote and newline escaped.

    Text that cannot be UTF-8 (lone surrogates from a JSON `\\ud800`) is replaced rather
    than left to fail the whole scrape at encoding time.
    """
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode("utf-8")
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def job_info_labels(job: Job) -> str:
    """The extra labels of cloudstack_async_job_info, pre-escaped, starting with a comma."""
    e = escape_label_value
    return (
        f',cmd_class="{e(job.cmd_class)}",instance_id="{e(job.instance_id)}",'
        f'account_id="{e(job.account_id)}",user_id="{e(job.user_id)}",'
        f'result_type="{e(job.result_type)}",error="{e(job.error)}",'
        f'result_object="{e(job.result_object)}",account="{e(job.account)}",'
        f'domain_id="{e(job.domain_id)}",domain_path="{e(job.domain_path)}",'
        f'management_server_id="{e(job.management_server_id)}",'
        f'management_server_name="{e(job.management_server_name)}"'
    )
