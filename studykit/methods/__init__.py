"""The method interface and registry.

Every training method is one module in this package behind one interface, so the training loop
(``studykit.train.fit``) and ``studykit.experiment`` never branch on a method's name:

    @register_method("augmax")
    class AugMax(Method):
        Config = AugMaxConfig                          # frozen, keyword-only; paper defaults
        def prepare_model(self, model) -> nn.Module    # e.g. convert BN to DuBIN
        def training_step(self, model, x, y) -> StepOutput
        def eval_model(self, model) -> nn.Module       # e.g. route dual BN to the clean BN
        def set_progress(self, step, total_steps)      # optional: schedules (eps ramp, warm-up)
        def prepare(self, context: MethodContext)      # optional: data, device, run store
                                                       # (a pretrained network: AdA)
        finetunes = True                               # optional: fine-tunes a base run
        finetune_schedule, milestones, base_method, set_base   # (AdvBN)

Importing this package registers every method: each module in it is imported (as timm's model
modules register their entry points), so a new method module needs no list kept by hand.
``create_method(name, **overrides)`` and ``list_methods(pattern)`` mirror timm's
``create_model``/``list_models``.
"""

import importlib
import pkgutil

from studykit.methods.base import (
    Method,
    MethodConfig,
    MethodContext,
    StepOutput,
    create_method,
    get_method_class,
    list_methods,
    method_config_fields,
    register_method,
)

__all__ = [
    "Method",
    "MethodConfig",
    "MethodContext",
    "StepOutput",
    "create_method",
    "get_method_class",
    "list_methods",
    "method_config_fields",
    "register_method",
]


def _import_method_modules() -> None:
    # Every module of the package but the interface registers its methods on import.
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


_import_method_modules()
