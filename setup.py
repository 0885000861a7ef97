import os
import re

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "cluster_func", "__init__.py")) as f:
    version = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)
with open(os.path.join(here, "README.md"), encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="cluster-func",
    version=version,
    description="Run an embarrassingly parallel Python function on every core (clum) or a cluster (cluf) with zero extra code",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["cluster_func", "cluster_func.*"]),
    python_requires=">=3.9",
    install_requires=["cloudpickle>=2.0"],  # the cluster API sends targets that cannot be imported by value
    extras_require={"test": ["pytest>=7", "pytest-timeout>=2", "numpy", "ruff", "mypy>=1.8"]},
    entry_points={"console_scripts": ["clum=cluster_func._start:clum", "cluf=cluster_func._start:cluf"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
        "Operating System :: POSIX :: Linux",
        "Topic :: System :: Distributed Computing",
    ],
)
