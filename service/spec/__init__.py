"""The v1 job spec: its models, the admission checks, the catalog and the optimiser allow-list."""
from service.spec.error import SpecError
from service.spec.model import InitSpec, JobSpec
from service.spec.validate import CheckedSpec, check_spec

__all__ = ["CheckedSpec", "InitSpec", "JobSpec", "SpecError", "check_spec"]
