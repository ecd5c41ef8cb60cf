"""A small LP kept alive in HiGHS between solves: MLA-LP's reduced LP, grown column by column.

    max s   s.t.   A u - s d <= b,   -1 <= u <= 1,   s free          (A: C x m dense, C <= ~100 rows)

Why not ``scipy.optimize.linprog``: it rebuilds the model (a Python list of bounds) and starts from scratch each
time. Here the model lives in one HiGHS instance: columns are added as numpy arrays, the right-hand side ``b``
changes in place, and HiGHS keeps its simplex basis, so a re-solve after adding a few columns costs a few dual
simplex iterations, not a cold start.

HiGHS comes from the ``highspy`` package (a dependency; tested with 1.16), else from the copy recent SciPy ships as
``scipy.optimize._highspy`` (the same pybind11 bindings, HiGHS 1.12 in SciPy 1.17; only methods both share are
used), so an environment installed before the dependency was added still works.
"""

from __future__ import annotations

import os
import sys

import numpy as np

try:  # the public bindings
    from highspy import Highs as _Highs
    from highspy import HighsModelStatus as _Status
except ImportError:  # SciPy's vendored copy of the same bindings
    try:
        from scipy.optimize._highspy._core import HighsModelStatus as _Status
        from scipy.optimize._highspy._core import _Highs
    except ImportError as e:
        raise ImportError(
            "MLA-LP's LP solver needs highspy (pip install highspy) or a SciPy that ships it"
        ) from e

_INF = 1e30  # HiGHS's infinity (kHighsInf is inf; 1e20 and up count as infinite)
_BANNER_SHOWN = False


def _new_highs():
    """A HiGHS instance. The first one in a process prints HiGHS's banner from C++ to file descriptor 1 before any
    option can turn output off; it would land in the middle of an attack's progress display, so that one
    construction writes to /dev/null (Python's own ``sys.stdout`` is flushed first and untouched)."""
    global _BANNER_SHOWN
    if _BANNER_SHOWN:
        return _Highs()
    _BANNER_SHOWN = True
    sys.stdout.flush()
    try:
        saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no file descriptor 1 to redirect (an embedded interpreter): let it print
        return _Highs()
    try:
        os.dup2(null, 1)
        return _Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


class ReducedLP:
    """``max s s.t. A u - s d <= b, |u| <= 1`` with ``d`` (C,) fixed at construction; columns of ``A`` and the
    right-hand side ``b`` may change between :meth:`solve` calls, and each solve starts from the last basis.

    HiGHS's tolerances are absolute, so it sees the problem in units where both sides are of order 1: it solves for
    ``s / s_unit`` (``s_unit`` an estimate of ``s``) and maximises ``weight * s / s_unit``. With D columns the reduced
    costs ``(A^T y)_i`` average ``~1/D`` of the objective; ``weight = D`` makes them of order 1 (with weight 1 a
    dual tolerance of 1e-7 left a relative gap of 6e-6 on 602,112 columns)."""

    def __init__(self, d: np.ndarray, s_unit: float = 1.0, weight: float = 1.0) -> None:
        self.rows = int(d.shape[0])
        self.s_unit, self.weight = float(s_unit), float(weight)
        self.cols = 0  # u columns so far (HiGHS column 0 is s)
        h = self._h = _new_highs()
        for name, value in (
            ("output_flag", False),
            ("presolve", "off"),  # presolve would discard the basis kept between solves
            ("solver", "simplex"),
            ("threads", 1),
            ("small_matrix_value", 1e-12),  # keep tiny gaps and entries (default: 1e-9 counts as zero)
        ):
            h.setOptionValue(name, value)
        c = self.rows
        empty_i, empty_f = np.zeros(0, dtype=np.int32), np.zeros(0)
        h.addRows(c, np.full(c, -_INF), np.zeros(c), 0, empty_i, empty_i, empty_f)
        h.addCols(
            1,
            np.array([-self.weight]),  # HiGHS minimises: -s
            np.array([-_INF]),
            np.array([_INF]),
            c,
            np.zeros(1, dtype=np.int32),
            np.arange(c, dtype=np.int32),
            -self.s_unit * np.asarray(d, dtype=np.float64),
        )

    def add_columns(self, a: np.ndarray) -> None:
        """Append the columns of ``a`` (C, k) as new variables in [-1, 1]; they enter the basis's nonbasic set."""
        c, k = a.shape
        if k == 0:
            return
        self._h.addCols(
            k,
            np.zeros(k),
            np.full(k, -1.0),
            np.full(k, 1.0),
            c * k,
            np.arange(0, c * k, c, dtype=np.int32),
            np.tile(np.arange(c, dtype=np.int32), k),
            np.ascontiguousarray(np.asarray(a, dtype=np.float64).T).ravel(),
        )
        self.cols += k

    def add_rows(self, a: np.ndarray, d: np.ndarray) -> None:
        """Append rows ``a u - s d <= b`` (``a`` (k, m) over the columns so far, ``d`` (k,)); their ``b`` comes with
        the next :meth:`set_rhs`, which then covers all rows in the order they were added (0 until then)."""
        k, m = a.shape
        if k == 0:
            return
        if m != self.cols:
            raise ValueError(f"add_rows: {m} columns given, the LP has {self.cols}")
        values = np.hstack(
            [-self.s_unit * np.asarray(d, dtype=np.float64)[:, None], np.asarray(a, np.float64)]
        )
        self._h.addRows(
            k,
            np.full(k, -_INF),
            np.zeros(k),
            k * (m + 1),
            np.arange(0, k * (m + 1), m + 1, dtype=np.int32),
            np.tile(np.arange(m + 1, dtype=np.int32), k),
            np.ascontiguousarray(values).ravel(),
        )
        self.rows += k

    def set_rhs(self, b: np.ndarray) -> None:
        """Row bounds ``A u - s d <= b`` (C,)."""
        for j, bj in enumerate(np.asarray(b, dtype=np.float64).tolist()):
            self._h.changeRowBounds(j, -_INF, bj)

    def solve(self) -> tuple[float, np.ndarray, np.ndarray] | None:
        """``(s, u (m,), y (C,) >= 0)`` at the optimum, ``y`` the row multipliers; ``None`` when infeasible.
        Raises ``RuntimeError`` on any other outcome (numerical trouble, a limit)."""
        h = self._h
        h.run()
        status = h.getModelStatus()
        if status in (_Status.kInfeasible, _Status.kUnboundedOrInfeasible):  # s is bounded above: infeasible
            return None
        if status != _Status.kOptimal:
            raise RuntimeError(f"HiGHS on the reduced LP: {h.modelStatusToString(status)}")
        sol = h.getSolution()
        x = np.asarray(sol.col_value)
        # minimising -weight s / s_unit: the duals of "<=" rows are <= 0, and in units of weight / s_unit
        y = -np.asarray(sol.row_dual) * (self.s_unit / self.weight)
        return float(x[0]) * self.s_unit, x[1:], np.maximum(y, 0.0)
