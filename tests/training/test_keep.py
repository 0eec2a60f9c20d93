"""imgclf.training.keep: which epoch of a stage the saved model comes from."""


def test_the_best_epoch_is_the_highest_validation_accuracy_then_the_lowest_loss():
    from imgclf.training.keep import best_of, better, kept_epochs

    rows = [{"epoch": 1, "stage": "head", "val_accuracy": 0.8, "val_loss": 0.5},
            {"epoch": 2, "stage": "head", "val_accuracy": 0.9, "val_loss": 0.4},
            {"epoch": 3, "stage": "head", "val_accuracy": 0.9, "val_loss": 0.3},  # a tie, lower loss: better
            {"epoch": 4, "stage": "head", "val_accuracy": 0.9, "val_loss": 0.35},
            {"epoch": 5, "stage": "fine_tune", "val_accuracy": 0.85, "val_loss": 0.3}]
    assert best_of(rows)["epoch"] == 3 and not better({"epoch": 6}, rows[0])  # no validation: never better
    bests = {"head": {"epoch": 3}, "fine_tune": {"epoch": 5}}
    assert kept_epochs(rows, bests, "best") == {"head": 3, "fine_tune": 5}
    assert kept_epochs(rows, bests, "last") == {"head": 4, "fine_tune": 5}


def test_a_best_checkpoint_a_killed_attempt_left_is_replaced_by_the_rerun(tmp_path):
    from imgclf.training.keep import remember

    (tmp_path / "epoch-0007.keras").write_text("killed attempt")
    remember(tmp_path, "epoch-0007.keras", {"epoch": 7, "val_accuracy": 0.9, "val_loss": 0.3}, "head", {})
    (tmp_path / "epoch-0007.keras").unlink()
    (tmp_path / "epoch-0007.keras").write_text("rerun")  # the epoch trained again after the kill
    bests = {}
    remember(tmp_path, "epoch-0007.keras", {"epoch": 7, "val_accuracy": 0.9, "val_loss": 0.3}, "head", bests)
    assert (tmp_path / bests["head"]["checkpoint"]).read_text() == "rerun"
