"""Training recipes: every setting of the authors' recipe lands in the model, optimizer and schedule."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from instlib import cli
from instlib.config import TrainConfig
from instlib.config.count import RECIPES
from instlib.count import train
from instlib.count.bank import load_bank
from instlib.count.inputs import RunData
from instlib.count.loop import make_optimizer
from instlib.count.schedules import SCHEDULES
from instlib.count.train import train_run
from instlib.data.folder import list_samples
from instlib.errors import InstlibError

from .conftest import tiny_config


def _drop_path_rates(model: torch.nn.Module) -> list[float]:
    return [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]


@pytest.fixture(scope="module")
def data(folders) -> RunData:
    real = load_bank(list_samples(folders["real"]))
    return RunData(train=real.subset(range(15)), val=real.subset(range(15, 20)), test=real.subset(range(3)))


def test_the_authors_recipe_lands(data):
    config = TrainConfig(recipe="authors", model="test_efficientnet", pretrained=False)
    assert (config.epochs, config.finetune_epochs, config.batch_size, config.crop_size) == (25, 25, 8, 200)
    model = train.build_model(data, config)

    assert model.spec.head == "regression" and model.net.dropout.p == 0.2
    rates = _drop_path_rates(model)
    # timm scales stochastic depth linearly over the blocks, from 0 towards 0.2, as torchvision does.
    assert rates and rates == sorted(rates) and 0 < max(rates) < 0.2
    assert model.spec.mean == (0.0414,) * 3 and model.spec.std == (0.0203,) * 3
    assert model.net.density_head is None  # their model regresses the count only
    # Default head init: the bias stays within nn.Linear's +-1/sqrt(fan_in), not at the mean count.
    assert abs(float(model.net.head.bias.detach())) <= 1 / math.sqrt(model.net.head.in_features)
    assert config.crops_per_epoch == 0  # an epoch is a pass over the images

    (group,) = make_optimizer(model, config).param_groups
    assert isinstance(make_optimizer(model, config), torch.optim.Adam)
    assert group["lr"] == 1e-4 and group["weight_decay"] == 0.0


def test_the_instlib_recipe_lands(data):
    config = TrainConfig(recipe="instlib", model="test_efficientnet", pretrained=False, crop_size=48)
    model = train.build_model(data, config)
    assert model.spec.head == "density" and not _drop_path_rates(model)
    assert model.spec.mean != (0.0414,) * 3  # the real images' own statistics
    (group,) = make_optimizer(model, config).param_groups
    assert group["lr"] == 1e-3 and group["weight_decay"] == 1e-5
    assert config.crops_per_epoch == 128
    # The paper's regressor under this recipe starts its bias at the mean crop count.
    regressor = train.build_model(data, config.updated(head="regression"))
    assert regressor.net.dropout.p == 0.0 and regressor.net.density_head is None
    assert float(regressor.net.head.bias.detach()) == pytest.approx(train._mean_crop_count(data.train, 48))


def test_steplr10_is_torchs_step_lr_stepped_per_epoch():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.1)
    for epoch in range(25):
        for within in (0.0, 0.5, 0.99):  # constant within an epoch
            assert SCHEDULES["steplr10"](epoch + within, 25) == pytest.approx(sched.get_last_lr()[0])
        opt.step()
        sched.step()


def test_the_schedule_lands_in_training(folders, tmp_path):
    config = tiny_config(recipe="authors", epochs=11, max_steps=1, crop_size=48)
    train_run([folders["real"]], folders["test"], tmp_path / "run", config, progress=False)
    history = pd.read_csv(tmp_path / "run" / "history.csv").query("epoch > 0")
    assert history["lr"].tolist() == pytest.approx([1e-3] * 10 + [1e-4])


def test_overrides_and_switching_recipes():
    assert TrainConfig().updated(recipe="authors") == TrainConfig(recipe="authors")
    # A setting given explicitly survives the switch; the rest follow the new recipe.
    mine = TrainConfig(lr=5e-4).updated(recipe="authors")
    assert mine.lr == 5e-4 and mine.head == "regression" and mine.schedule == "steplr10" and mine.weight_decay == 0.0
    assert TrainConfig(recipe="authors").updated(recipe="instlib") == TrainConfig()
    assert set(RECIPES) == {"authors", "instlib"}
    with pytest.raises(InstlibError, match="unknown recipe"):
        TrainConfig(recipe="nope")
    # Options left out on the command line (None) keep the recipe's values.
    config = cli.settings_from_options(TrainConfig, {"recipe": "authors", "epochs": 3, "split": None})
    assert (config.recipe, config.epochs, config.drop_path_rate, config.norm) == ("authors", 3, 0.2, "idcia")
    assert config.keep == "best" and cli.settings_from_options(TrainConfig, {}).keep == "last"
    assert cli.settings_from_options(TrainConfig, {"keep": "best"}).keep == "best"  # --keep best under instlib
    with pytest.raises(InstlibError, match="unknown epoch choice"):
        TrainConfig(keep="median")
