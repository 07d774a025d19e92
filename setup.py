"""Installation script for the ``icmsr`` toolkit."""
from pathlib import Path
from typing import List

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_requirements(name: str) -> List[str]:
    """Read one requirements file, dropping comments and blank lines.

    Args:
        name: File name under ``requirements/`` without extension.

    Returns:
        The requirement specifiers in file order.
    """
    lines = (HERE / 'requirements' / f'{name}.txt').read_text().splitlines()
    return [ln.split('#')[0].strip() for ln in lines if ln.split('#')[0].strip()]


def read_version() -> str:
    """Return ``__version__`` from ``icmsr/version.py`` without importing the package."""
    namespace: dict = {}
    exec((HERE / 'icmsr' / 'version.py').read_text(), namespace)
    return namespace['__version__']


setup(
    name='icmsr',
    version=read_version(),
    description='ICM-SR: image-conditioned manifold regularization for one-step '
    'diffusion super-resolution',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'docs')),
    include_package_data=True,
    install_requires=read_requirements('runtime'),
    extras_require={
        'tests': read_requirements('tests'),
        'metrics': read_requirements('metrics'),
        'webui': read_requirements('webui'),
        'prompts': read_requirements('prompts'),
        'all': read_requirements('tests') + read_requirements('metrics'),
    },
)
