"""SageMaker's built-in Semantic Segmentation image names, which a request runs as this product.

A notebook written for the built-in algorithm names its image with
``sagemaker.image_uris.retrieve("semantic-segmentation", region)``, which returns
``<account>.dkr.ecr.<region>.<domain>/semantic-segmentation:1``. Such a name is not pulled (it is the
closed image this product replaces): the job runs this environment's ``train``, or the image that
``$SEMSEG_BUILTIN_IMAGE`` names (e.g. ``semseg:cpu``, built by ``make image-cpu``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

IMAGE_VARIABLE = "SEMSEG_BUILTIN_IMAGE"
REPOSITORY = "semantic-segmentation"
# The registry account of each region, version "1": the SageMaker Python SDK's
# src/sagemaker/image_uri_config/semantic-segmentation.json (sagemaker 2.257.7), what
# image_uris.retrieve reads.
REGISTRIES = {
    "af-south-1": "455444449433",
    "ap-east-1": "286214385809",
    "ap-northeast-1": "501404015308",
    "ap-northeast-2": "306986355934",
    "ap-northeast-3": "867004704886",
    "ap-south-1": "991648021394",
    "ap-south-2": "628508329040",
    "ap-southeast-1": "475088953585",
    "ap-southeast-2": "544295431143",
    "ap-southeast-3": "951798379941",
    "ap-southeast-4": "106583098589",
    "ca-central-1": "469771592824",
    "ca-west-1": "190319476487",
    "cn-north-1": "390948362332",
    "cn-northwest-1": "387376663083",
    "eu-central-1": "813361260812",
    "eu-central-2": "680994064768",
    "eu-north-1": "669576153137",
    "eu-south-1": "257386234256",
    "eu-south-2": "104374241257",
    "eu-west-1": "685385470294",
    "eu-west-2": "644912444149",
    "eu-west-3": "749696950732",
    "il-central-1": "898809789911",
    "me-central-1": "272398656194",
    "me-south-1": "249704162688",
    "sa-east-1": "855470959533",
    "us-east-1": "811284229777",
    "us-east-2": "825641698319",
    "us-gov-east-1": "237065988967",
    "us-gov-west-1": "226302683700",
    "us-iso-east-1": "490574956308",
    "us-isob-east-1": "765400339828",
    "us-isof-east-1": "108575199400",
    "us-isof-south-1": "124985052026",
    "us-west-1": "632365934929",
    "us-west-2": "433757028032",
}
# account.dkr.ecr.region.domain/semantic-segmentation, then any tag or digest (or none)
_NAME = re.compile(
    r"(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.[a-z0-9.-]+/"
    + REPOSITORY
    + r"(?::[\w.-]+|@sha256:[0-9a-f]{64})?"
)


def region_of(image: str) -> str | None:
    """The region of ``image`` when it is the built-in's image (its account is that region's), else None."""
    match = _NAME.fullmatch(image)
    if match is None or REGISTRIES.get(match["region"]) != match["account"]:
        return None
    return match["region"]


def standing_in(image: str | None, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(the image to run, a sentence for the log): ``image`` as it is, unless it is the built-in's.

    For the built-in's, the image ``$SEMSEG_BUILTIN_IMAGE`` names, or None for this environment's ``train``.
    """
    if image is None:
        return None, None
    region = region_of(image)
    if region is None:
        return image, None
    stand_in = environ.get(IMAGE_VARIABLE, "").strip() or None
    runs = (
        f"the image {stand_in} ({IMAGE_VARIABLE})"
        if stand_in
        else f"this environment's train (set {IMAGE_VARIABLE} to use an image)"
    )
    return stand_in, (
        f"TrainingImage {image} is SageMaker's built-in Semantic Segmentation image ({region}): this product "
        f"trains in its place, with {runs}"
    )
