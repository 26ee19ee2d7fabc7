"""The request checked against AWS's own schema of CreateTrainingJob, botocore's service model, with
botocore's own parameter validation: a wrong type or an unknown key anywhere in the request is one
sentence naming the field, exactly as boto3 would refuse it before sending it to SageMaker.

Only one rule is ours: the fields SageMaker needs to find machines (``RoleArn``, ``ResourceConfig``,
``StoppingCondition``) may be left out of a request run here, where they do not apply, and so may
``AlgorithmSpecification`` and its ``TrainingInputMode``, which default to File mode here.
"""

from __future__ import annotations

import functools
import re

from ..errors import UserError
from ..names import shown

OPERATION = "CreateTrainingJob"
NOT_NEEDED_HERE = {
    "input": ("RoleArn", "ResourceConfig", "StoppingCondition", "AlgorithmSpecification"),
    "AlgorithmSpecification": ("TrainingInputMode",),
}
_MISSING_HERE = re.compile(
    "|".join(
        f'Missing required parameter in {re.escape(parent)}: "(?:{"|".join(fields)})"'
        for parent, fields in NOT_NEEDED_HERE.items()
    )
)


@functools.cache
def _input_shape():
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker").operation_model(OPERATION).input_shape


def check(raw: dict) -> None:
    """Raise a ``UserError`` for the first problem botocore's validation finds that matters here."""
    from botocore.validate import ParamValidator

    report = ParamValidator().validate(raw, _input_shape())
    if not report.has_errors():
        return
    problems = [line for line in report.generate_report().splitlines() if line and not _MISSING_HERE.fullmatch(line)]
    if problems:
        first = problems[0] if len(problems[0]) <= 300 else problems[0][:297] + "..."
        more = f" ({len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"The request does not fit {OPERATION}'s input, as botocore checks it: {shown(first)}{more}")
