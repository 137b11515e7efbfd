"""A job's judge over a folder on the server (judges.names_a_folder), allowed again each time a worker builds it: the
person who started the job may have lost the permission to name one (judges.FOLDER_PERMISSION), or their account
been deactivated or deleted, before a worker took the job or resumed it after a lost one. Import jobs read their
kind's permission again as they run in the same way (annotate.import_jobs.check_kind_permission).
"""
from __future__ import annotations

from django.contrib.auth import get_user_model

from judges import FOLDER_PERMISSION, JudgeError, check_folder_access, names_a_folder

from .models import Job

# A job's params key recording that a command, not a person, started it with a judge over a folder: the command's
# user reads the server's folders anyway. A job with no creator and no such record was a person's, since deleted.
STARTED_BY = "folder_judge_started_by"
COMMAND = "command"


class FolderJudgeRefused(JudgeError):
    """The account that started a job may no longer have a judge over a folder built; names the judge and the
    permission. The job fails with it, storing nothing more and keeping what it stored."""


def noted(user, *paths: str) -> dict:
    """What a job records in its params when it is started (`user` None: by a command) with these judges, so that
    `check_creator` tells a command's job from one whose creator's account was deleted: {} for a person's."""
    if user is None and any(path and names_a_folder(path) for path in paths):
        return {STARTED_BY: COMMAND}
    return {}


def check_creator(job: Job, *paths: str) -> None:
    """FolderJudgeRefused unless the job's creator may still name each of these judges that reads a folder: with their
    permissions as they are now, their account active and staff. A job a command started (`noted`) is not asked."""
    for path in paths:
        if not path or not names_a_folder(path):
            continue
        if job.created_by_id is None and (job.params or {}).get(STARTED_BY) == COMMAND:
            continue
        # read now, not the job's cached row: its permissions are cached on it, and it may be gone since
        creator = get_user_model().objects.filter(pk=job.created_by_id).first() if job.created_by_id else None
        if creator is None:  # or a command's queued before its jobs were marked: the rows cannot tell which
            raise FolderJudgeRefused(_refusal(path, "was deleted, or a command queued it before commands' jobs were "
                                                    "marked as theirs (queue it again from the command)"))
        try:
            check_folder_access(path, creator)
        except JudgeError:
            # "does not have it": a judge read as a folder only since it was queued was never allowed to them
            why = "was deactivated" if not creator.is_active else "does not have it"
            raise FolderJudgeRefused(_refusal(path, why)) from None


def _refusal(path: str, why: str) -> str:
    return (f"judge {path.strip()!r} loads a model from a folder on the server, which needs the permission "
            f"{FOLDER_PERMISSION!r}, and the account that started this job {why}: the judge was not built, and what "
            "the job stored before stays. Start it again from an account with that permission, or name a registered "
            "version instead (judges.llm:for_version?name=...)")
