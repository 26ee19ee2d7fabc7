"""Run by the SageMaker Python SDK's own environment (``sagemaker_sdk.python()``), as a user's notebook:
an ``Estimator`` for the built-in Semantic Segmentation image, ``fit`` on the channels given, and the
CreateTrainingJob request exactly as botocore sends it, captured by an event hook, printed as JSON.

The call itself goes to the moto server that ``AWS_ENDPOINT_URL`` names, so the SDK runs its whole
path unpatched. Arguments: a JSON object with job_name, output_path and channels (name -> the
``TrainingInput`` keyword arguments, ``shuffle_seed`` for its ShuffleConfig), optional
hyperparameters, instance_count, input_mode and checkpoint_s3_uri.
"""

import copy
import json
import sys

import boto3
import sagemaker
from sagemaker.estimator import Estimator
from sagemaker.inputs import ShuffleConfig, TrainingInput

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


def main() -> None:
    spec = json.loads(sys.argv[1])
    captured = []

    def capture(params, **_):
        captured.append(copy.deepcopy(params))

    boto_session = boto3.Session(region_name=REGION)
    boto_session.events.register("provide-client-params.sagemaker.CreateTrainingJob", capture)
    session = sagemaker.Session(boto_session=boto_session, default_bucket=spec["bucket"])
    estimator = Estimator(
        image_uri=sagemaker.image_uris.retrieve("semantic-segmentation", REGION),
        role=ROLE,
        instance_count=spec.get("instance_count", 1),
        instance_type="ml.p3.2xlarge",
        input_mode=spec.get("input_mode", "File"),
        output_path=spec["output_path"],
        checkpoint_s3_uri=spec.get("checkpoint_s3_uri"),
        sagemaker_session=session,
    )
    estimator.set_hyperparameters(**spec.get("hyperparameters", {}))
    channels = {}
    for name, arguments in spec["channels"].items():
        if "shuffle_seed" in arguments:  # JSON carries the seed, the SDK takes a ShuffleConfig
            arguments["shuffle_config"] = ShuffleConfig(arguments.pop("shuffle_seed"))
        channels[name] = TrainingInput(**arguments)
    estimator.fit(channels, job_name=spec["job_name"], wait=False, logs=False)
    print(json.dumps(captured[-1], default=str))


if __name__ == "__main__":
    main()
