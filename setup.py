"""Packaging for the CloudZero AnyCost Stream connector.

Dataflow workers install this (`--setup_file ./setup.py`), so `pipeline` and `transforms`
travel with the job. `pip install .[gcp]` adds Google Secret Manager for `--api_key_secret`.
"""
import os
import re

import setuptools


def _version():
    """anycost/version.py's VERSION, read as text: the package's dependencies may not be installed yet."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "anycost", "version.py")) as handle:
        return re.search(r'^VERSION = "([^"]+)"$', handle.read(), re.M).group(1)


setuptools.setup(
    name="cloudzero-anycost-beam",
    version=_version(),
    description="Apache Beam pipeline that uploads Common Bill Format files to CloudZero AnyCost Stream",
    license="Apache-2.0",
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
    ],
    packages=["anycost", "anycost.inputs", "anycost.bodies", "anycost.delivery", "anycost.outcomes",
              "anycost_emulator", "pipeline", "transforms"],
    python_requires=">=3.9",
    install_requires=[
        "apache-beam>=2.60",
        "pyarrow>=14",
        "requests>=2.31",
        "numpy>=1.24",
    ],
    extras_require={
        "gcp": ["apache-beam[gcp]>=2.60", "google-cloud-secret-manager>=2.16"],
        "test": ["pytest>=7", "hypothesis>=6", "orjson>=3.9", "wheel", "cryptography>=41"],
    },
    entry_points={"console_scripts": ["cloudzero-anycost=pipeline.main:main"]},
)
