"""What the admins of job kinds share: "Add" starts the job through its service, which may refuse it."""


class StartsJobAdmin:
    """For a ModelAdmin whose save_model starts the job through its service and leaves `obj.pk` None when the service
    refused it (the reason shown as a message): no "Added" entry is written to the admin's history for a job that
    was never made."""

    def log_addition(self, request, obj, message):
        if obj.pk is None:
            return None
        return super().log_addition(request, obj, message)
