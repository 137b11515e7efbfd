"""What every long job shares: one abstract model (`jobs.models.Job`) and one set of lifecycle functions
(`jobs.lifecycle`): claim, progress, log, fail, finish, cancel, and requeue after a worker is lost."""
