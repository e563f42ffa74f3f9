"""The engine as the HTTP process sees it: no MLX here.

`interface.Engine` is the narrow async interface serving code uses; `client.EngineClient` speaks the wire to the
engine process; `manager.MLXModelManager` admits requests and plans loads; `params`, `wire` and `commands` are the
plain data both sides share. The side that owns MLX is `mlx_router/core/`, imported only in the engine process.
"""
