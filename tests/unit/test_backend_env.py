from mlx_router.engine.backend_env import configure_backend


def test_sets_what_the_user_left_unset(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    applied = configure_backend(cudnn_attention=False, environ=env)
    assert env["MLX_CUDA_USE_CUDNN_SDPA"] == "0"
    assert env["MLX_PTX_CACHE_DIR"].startswith(str(tmp_path / "mlx-router" / "cuda-kernels" / "mlx-"))
    assert applied == {k: env[k] for k in ("MLX_CUDA_USE_CUDNN_SDPA", "MLX_PTX_CACHE_DIR")}


def test_the_setting_turns_cudnn_on():
    env: dict[str, str] = {"MLX_PTX_CACHE_DIR": "/x"}
    configure_backend(cudnn_attention=True, environ=env)
    assert env["MLX_CUDA_USE_CUDNN_SDPA"] == "1"


def test_variables_the_user_set_win():
    env = {"MLX_CUDA_USE_CUDNN_SDPA": "1", "MLX_PTX_CACHE_DIR": "/mine"}
    assert configure_backend(cudnn_attention=False, environ=env) == {}
    assert env == {"MLX_CUDA_USE_CUDNN_SDPA": "1", "MLX_PTX_CACHE_DIR": "/mine"}
