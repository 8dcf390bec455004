"""DeepMind Control Suite tasks rendered from pixels, with the segmentation the sim teacher reads."""

from __future__ import annotations

import numpy as np
from dm_control import suite
from mujoco import mjtGeom, mjtObj

from training.config import EnvConfig
from training.envs.base import PixelEnv

# DrQ-v2's camera choice: the tracking camera, and the one that sees a quadruped whole.
DEFAULT_CAMERA = {"quadruped": 2}


class DMCEnv(PixelEnv):
    has_scene = True

    def __init__(self, name: str, config: EnvConfig, seed: int) -> None:
        super().__init__(config)
        domain, _, task = name.partition("-")
        if (domain, task) not in suite.ALL_TASKS:
            raise ValueError(f"env.id: dm_control has no task '{name}' (domain-task, e.g. cartpole-balance)")
        self._env = suite.load(domain, task, task_kwargs={"random": seed})
        self.physics = self._env.physics
        self.camera = config.camera if config.camera is not None else DEFAULT_CAMERA.get(domain, 0)
        if config.render_quality == "fast":
            # Must happen before the first render: the GL context reads these when it is created.
            self.physics.model.vis.quality.shadowsize = 0
            self.physics.model.vis.quality.offsamples = 0
            self.physics.model.mat_reflectance[:] = 0.0
        self._mask_geoms: dict[tuple[str, ...], np.ndarray] = {}
        self._segmented: tuple[np.ndarray, np.ndarray] | None = None  # of the latest frame
        spec = self._env.action_spec()
        self.action_low = spec.minimum.astype(np.float64)
        self.action_high = spec.maximum.astype(np.float64)

    def _reset(self) -> np.ndarray:
        self._env.reset()
        return self._render()

    def _advance(self, action: np.ndarray) -> tuple[float, bool, bool]:
        ts = self._env.step(action)
        # dm_control episodes end on a time limit with discount 1: a truncation, never terminal.
        terminal = ts.last() and ts.discount == 0.0
        return float(ts.reward or 0.0), terminal, ts.last() and not terminal

    def _render(self) -> np.ndarray:
        size = self.config.image_size
        self._segmented = None
        return self.physics.render(size, size, camera_id=self.camera)

    def geom_ids(self, objects: list[str]) -> np.ndarray:
        """Geoms of the named bodies (and their children) or the named geoms themselves."""
        model = self.physics.model
        ids: set[int] = set()
        for name in objects:
            body = model.name2id(name, "body") if name in self._names("body") else -1
            if body >= 0:
                subtree = {body} | {b for b in range(model.nbody) if self._is_descendant(b, body)}
                ids |= {g for g in range(model.ngeom) if model.geom_bodyid[g] in subtree}
            elif name in self._names("geom"):
                ids.add(model.name2id(name, "geom"))
            else:
                raise ValueError(
                    f"teacher.objects: '{name}' is neither a body nor a geom of this task "
                    f"(bodies: {self._names('body')}, geoms: {self._names('geom')})"
                )
        return np.array(sorted(ids), dtype=np.int32)

    def _segmentation(self) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel of the latest frame: the geom id, and whether a geom is there at all (else the
        skybox). Rendered once per frame: the object mask and the background mask share it."""
        if self._segmented is None:
            size = self.config.image_size
            seg = self.physics.render(size, size, camera_id=self.camera, segmentation=True)
            self._segmented = seg[..., 0], seg[..., 1] == mjtObj.mjOBJ_GEOM
        return self._segmented

    def object_mask(self, objects: list[str]) -> np.ndarray:
        key = tuple(objects)
        if key not in self._mask_geoms:
            self._mask_geoms[key] = self.geom_ids(objects)
        ids, is_geom = self._segmentation()
        return is_geom & np.isin(ids, self._mask_geoms[key])

    def floor_geoms(self) -> np.ndarray:
        return np.flatnonzero(self.physics.model.geom_type == mjtGeom.mjGEOM_PLANE)

    def body_geoms(self) -> np.ndarray:
        """Every geom but the floor: the bodies, and fixed parts such as rails and walls."""
        return np.flatnonzero(self.physics.model.geom_type != mjtGeom.mjGEOM_PLANE)

    def background_mask(self) -> np.ndarray:
        """Bool [H, W]: the sky and the floor in the current frame."""
        ids, is_geom = self._segmentation()
        return ~is_geom | np.isin(ids, self.floor_geoms())

    def _names(self, kind: str) -> list[str]:
        model = self.physics.model
        count = model.nbody if kind == "body" else model.ngeom
        return [model.id2name(i, kind) for i in range(count)]

    def _is_descendant(self, body: int, ancestor: int) -> bool:
        parents = self.physics.model.body_parentid
        while body != 0:
            body = parents[body]
            if body == ancestor:
                return True
        return False
