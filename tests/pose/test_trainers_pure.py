"""The trainer interface without training: registry, parameter checks, progress from training logs."""

import pytest

from posehub.pose import trainers
from posehub.pose.trainers._files import LogWatcher

SLEAP_LOG = ("epoch,train/loss,val/loss,learning_rate\n0,,0.0013,\n0,0.02,,0.001\n1,0.01,0.0009,0.001\n")
DLC_LOG = ("step,losses/eval.total_loss,losses/train.total_loss\n1,,0.10\n2,0.003,0.0198\n")


def test_registry_names_and_aliases():
    assert {"sleap", "dlc"} <= set(trainers.available())
    assert trainers.get("DeepLabCut").name == "dlc" and trainers.get("sleap-nn").name == "sleap"
    with pytest.raises(trainers.TrainerError, match=r"unknown framework 'openpose'; available: dlc, .*sleap"):
        trainers.get("openpose")


def test_a_lab_registers_its_own_trainer():
    class Mine(trainers.Trainer):
        name = "mine"
        defaults = {"epochs": 1}

    trainers.register("mine", Mine)
    assert trainers.get("mine") is Mine and "mine" in trainers.available()
    with pytest.raises(TypeError, match="is not a posehub Trainer subclass"):
        trainers.register("bad", object)


@pytest.mark.parametrize("fw,params,message", [
    ("sleap", {"epoch": 3}, "sleap: unknown parameter(s) epoch; known: augment, batch_size, device, epochs, filters, "
                            "learning_rate, max_stride, output_stride, scale, sigma, steps_per_epoch, "
                            "validation_fraction"),
    ("dlc", {"crop": 256, "lr": 1}, "dlc: unknown parameter(s) lr; known: batch_size, crop, device, epochs, "
                                    "learning_rate, net_type, weights"),
])
def test_unknown_parameters_are_refused(fw, params, message):
    with pytest.raises(trainers.TrainerError) as e:
        trainers.get(fw)().params(params)
    assert str(e.value) == message


def test_full_settings_are_known_parameters():
    for fw in ("sleap", "dlc"):
        t = trainers.get(fw)()
        assert t.params(t.full)


@pytest.mark.parametrize("text,losses", [(SLEAP_LOG, [0.0013, 0.01]), (DLC_LOG, [0.10, 0.0198])])
def test_progress_from_each_tools_training_log(tmp_path, text, losses):
    events = []
    w = LogWatcher((tmp_path, "log.csv"), events.append, epochs=2)
    w.poll()
    assert events == []  # no log yet
    (tmp_path / "log.csv").write_text(text)
    w.poll()
    w.poll()  # nothing twice
    assert [(e["epoch"], e["epochs"]) for e in events] == [(1, 2), (2, 2)]
    assert [e["loss"] for e in events] == pytest.approx(losses)


@pytest.mark.parametrize("fw,params,message", [
    ("sleap", {"epochs": 0}, "sleap: epochs must be > 0, got 0"),
    ("sleap", {"epochs": "ten"}, "sleap: epochs must be a number, got 'ten'"),
    ("sleap", {"scale": 2}, "sleap: scale must be in (0, 1], got 2"),
    ("dlc", {"batch_size": -1}, "dlc: batch_size must be > 0, got -1"),
    ("dlc", {"weights": "/no/such.pt"}, "dlc: weights '/no/such.pt' is none of 'auto', 'imagenet', 'scratch' nor a local .pt file"),
])
def test_bad_parameter_values_are_refused(fw, params, message):
    with pytest.raises(trainers.TrainerError) as e:
        trainers.get(fw)().params(params)
    assert str(e.value) == message


def test_parameters_a_trainer_declares_may_be_zero():
    sleap = trainers.get("sleap")()
    assert sleap.params({"validation_fraction": 0})["validation_fraction"] == 0  # train on every training frame
    assert sleap.params({"steps_per_epoch": 0})["steps_per_epoch"] == 0  # its default is 0
    with pytest.raises(trainers.TrainerError, match=r"^sleap: validation_fraction must be >= 0, got -0.1$"):
        sleap.params({"validation_fraction": -0.1})
    with pytest.raises(trainers.TrainerError, match=r"^sleap: learning_rate must be > 0, got 0$"):
        sleap.params({"learning_rate": 0})

    class Mine(trainers.Trainer):
        name = "mine"
        defaults = {"epochs": 1, "dropout": 0.1, "warmup": 5}
        may_be_zero = frozenset({"dropout"})

    assert Mine().params({"dropout": 0.0})["dropout"] == 0.0
    with pytest.raises(trainers.TrainerError, match=r"^mine: warmup must be > 0, got 0$"):
        Mine().params({"warmup": 0})


def test_declared_zero_parameters_are_known_parameters():
    for fw in ("sleap", "dlc"):
        t = trainers.get(fw)()
        assert set(t.may_be_zero) <= set(t.defaults)
        assert t.confmaps is False  # confidence maps only when asked for
