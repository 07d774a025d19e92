"""Registering the toolkit's components outside the ``Runner``.

The registries in :mod:`icmsr.registry` import nothing of the toolkit (their
``locations`` load the defining packages lazily), so this function, which
imports every package that registers components, lives here instead: the
registry stays a leaf that every component can import.
"""
import itertools

_SCOPE_IDS = itertools.count()


def register_all_modules(init_default_scope: bool = True) -> None:
    """Import every module that registers components and set the default scope.

    The ``Runner`` does this by itself through ``default_scope='icmsr'``; call it
    when building components from configs in your own scripts.

    Args:
        init_default_scope: Whether to make ``icmsr`` the current default scope
            of MMEngine's ``DefaultScope``.
    """
    import icmsr.datasets  # noqa: F401
    import icmsr.degradations  # noqa: F401
    import icmsr.engine  # noqa: F401
    import icmsr.evaluation  # noqa: F401
    import icmsr.models  # noqa: F401
    if init_default_scope:
        from mmengine.registry import DefaultScope
        current = DefaultScope.get_current_instance()
        if current is None or current.scope_name != 'icmsr':
            # Instance names must be unique; the scope name is what matters.
            DefaultScope.get_instance(f'icmsr-{next(_SCOPE_IDS)}', scope_name='icmsr')
