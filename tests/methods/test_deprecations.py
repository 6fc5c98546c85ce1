"""Old names keep working until 0.3.0 and say so (torchmetrics' deprecation habit)."""

from __future__ import annotations

import importlib

import pytest

from halluc_cl.errors import ConfigError, HallucDeprecationWarning
from halluc_cl.methods import KLSelfDistillation, Method

WARNING = r"is deprecated since halluc-cl 0\.2\.0 and will be removed in 0\.3\.0"


def test_model_regularizers_is_model_methods_with_a_warning():
    from halluc_cl.train.module import FactSFTModule

    method = KLSelfDistillation()
    with pytest.warns(HallucDeprecationWarning, match=f"model.regularizers {WARNING}; use model.methods"):
        module = FactSFTModule("synthetic://tiny", regularizers=[method])
    assert module.methods == [method]
    with pytest.raises(ConfigError, match="set one"):
        FactSFTModule("synthetic://tiny", methods=[method], regularizers=[method])


def test_the_old_base_class_and_package_names_still_resolve():
    with pytest.warns(HallucDeprecationWarning, match=f"Regularizer {WARNING}"):
        from halluc_cl.methods import Regularizer
    assert Regularizer is Method
    import halluc_cl.regularizers as old

    with pytest.warns(HallucDeprecationWarning, match=f"halluc_cl.regularizers {WARNING}"):
        importlib.reload(old)
    assert old.KLSelfDistillation is KLSelfDistillation


def test_data_distill_select_is_data_extra_select_with_a_warning():
    from halluc_cl.data.datamodule import FactDataModule

    with pytest.warns(HallucDeprecationWarning, match=f"data.distill_select {WARNING}"):
        data = FactDataModule(extra_per_batch=4, distill_select="nearest")
    assert data.extra_select == "nearest"
