"""The node's parameter services, answered by the node instead of rclpy, and bounded.

rclpy's own handlers trust the request: a ParameterValue.type it does not know raised out
of the executor and ended the process (issue 10); one GetParameters request naming
``labels`` 20,000 times built a 323 MB reply (+796 MB peak RSS); 200,000 entries in one
SetParameters kept the executor busy for 15 s; 40 ``labels`` entries of 256 new words each
held it for 48 s, encoding one set after another (issue 20, items 2 and 4). Here:

* every request gets a reply; a bad entry is refused by name, the rest are served;
* counts are capped before any work: entries per set request, names per get / describe /
  types request, prefixes per list request, and the estimated size of a GetParameters reply;
* ``labels`` is given at most once per request, and its text encoding runs on the label
  worker while the executor serves everything else (the handlers are coroutines).

A mixin of LgsegNode: it uses the node's ``_prepare_labels_off_executor``, ``_check_value``,
``_logger_line``, ``_output_events`` and rclpy's parameter API.
"""
from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager

from rcl_interfaces.msg import ListParametersResult, SetParametersResult
from rcl_interfaces.srv import (DescribeParameters, GetParameters, GetParameterTypes, ListParameters,
                                SetParameters, SetParametersAtomically)
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.parameter import Parameter

from lgseg_ros.labels import LabelSetError, shown
from lgseg_ros.ros import params as P

# The node declares about 25 parameters; `ros2 param dump` asks for each once.
MAX_SET_ENTRIES = 64
MAX_NAMES = 128
MAX_PREFIXES = 64
# The node's longest parameter name is 26 characters; rcl allows any length.
MAX_NAME_CHARS = 256
# The largest GetParameters reply built: every parameter at its largest (256 labels of 64
# characters is 16 KB) fits many times over.
MAX_REPLY_BYTES = 1 << 20

_TYPE_NAMES = {t.value: t.name.lower() for t in Parameter.Type}
# The ParameterValue field each type is read from.
_VALUE_FIELDS = {1: "bool_value", 2: "integer_value", 3: "double_value", 4: "string_value",
                 5: "byte_array_value", 6: "bool_array_value", 7: "integer_array_value",
                 8: "double_array_value", 9: "string_array_value"}
# No parameter of the node takes more entries (labels: 256, cameras: 16); rclpy walks every
# entry of an array value in Python before any check of ours could run.
MAX_ARRAY_ENTRIES = 4096


def _value_bytes(value) -> int:
    """A cheap upper estimate of a ParameterValue's serialized size."""
    size = 16 + len(value.string_value) + 8 * (len(value.integer_array_value)
                                               + len(value.double_array_value)
                                               + len(value.bool_array_value))
    size += len(value.byte_array_value)
    return size + sum(8 + len(s) for s in value.string_array_value)


def _named_twice(names) -> str | None:
    """The first name a request gives twice: no tool asks for a parameter twice in one
    request, and each repeat of ``labels`` added 17 KB to the reply (probe round 16: a
    607-byte get_parameters request drew 873 KB, a describe_parameters one 26 times its size)."""
    seen = set()
    for n in names:
        if n in seen:
            return n
        seen.add(n)
    return None


class ParameterGuardMixin:
    """Installs the guarded handlers on rclpy's parameter services (call once, in __init__)."""

    def _guard_parameter_services(self) -> None:
        # Reentrant: a set request awaiting label encoding must not hold back the other
        # parameter services (they share the node's default group otherwise).
        self._parameter_group = ReentrantCallbackGroup()
        # The `cameras` a non-atomic set request carries, while its entries are set one at
        # a time (per thread: the group is reentrant); see _request_cameras.
        self._request_scope = threading.local()
        handlers = {
            SetParameters: self._on_set_parameters_request,
            SetParametersAtomically: self._on_set_parameters_atomically_request,
            GetParameters: self._on_get_parameters_request,
        }
        for srv in self.services:
            if srv.srv_type in handlers:
                srv.callback = handlers[srv.srv_type]
            elif srv.srv_type in (DescribeParameters, GetParameterTypes):
                srv.callback = self._guarded_parameter_service(
                    srv.srv_name, self._capped_names(srv.srv_name, srv.callback))
            elif srv.srv_type is ListParameters:
                srv.callback = self._guarded_parameter_service(
                    srv.srv_name, self._capped_list(srv.srv_name, srv.callback))
            elif srv.srv_type.__module__.startswith("rcl_interfaces"):
                srv.callback = self._guarded_parameter_service(srv.srv_name, srv.callback)
            else:
                continue
            if srv.callback_group is not None:
                srv.callback_group.entities.discard(weakref.ref(srv))
            srv.callback_group = self._parameter_group
            self._parameter_group.add_entity(srv)
        # /parameter_events again, with the outputs' throttled QoS warning (outputs.py): rclpy's
        # default logged a line for every subscriber asking it for transient_local.
        old = self._parameter_event_publisher
        if old is not None:
            self.destroy_publisher(old)
            self._parameter_event_publisher = self.create_publisher(
                old.msg_type, "/parameter_events", old.qos_profile,
                event_callbacks=self._output_events("/parameter_events"))

    def _refuse_request(self, service: str, why: str) -> None:
        self._guard_warning(service, f"{service}: request refused: {why}")

    def _guard_warning(self, service: str, line: str) -> None:
        """One line per service every few seconds, with the count of the ones held back: a
        peer repeating a refused request must not fill the log (the node's _request_line)."""
        self._request_line(f"parameter service {service}", line, level="warning")

    def _guarded_parameter_service(self, name: str, callback):
        def guarded(req, resp):
            try:
                return callback(req, resp)
            except Exception as e:  # an empty reply; the node keeps serving
                self._refuse_request(name, shown(str(e), 200))
                return resp
        return guarded

    def _capped_names(self, name: str, callback):
        def capped(req, resp):
            if len(req.names) > MAX_NAMES:
                self._refuse_request(name, f"{len(req.names)} names, at most {MAX_NAMES} per request")
                return resp
            longest = max((len(n) for n in req.names), default=0)
            if longest > MAX_NAME_CHARS:
                self._refuse_request(name, f"a name of {longest} characters; parameter names "
                                     f"are at most {MAX_NAME_CHARS}")
                return resp
            twice = _named_twice(req.names)
            if twice is not None:
                self._refuse_request(name, f"parameter {shown(twice)} named more than once; "
                                     "ask for each parameter once")
                return resp
            return callback(req, resp)
        return capped

    def _capped_list(self, name: str, callback):
        def capped(req, resp):
            if len(req.prefixes) > MAX_PREFIXES:
                self._refuse_request(name, f"{len(req.prefixes)} prefixes, at most {MAX_PREFIXES}")
                resp.result = ListParametersResult()
                return resp
            longest = max((len(p) for p in req.prefixes), default=0)
            if longest > MAX_NAME_CHARS:
                # rclpy copies each prefix once per parameter (25 times): 64 prefixes of
                # 2 MB held the executor 0.37 s (probe round 14)
                self._refuse_request(name, f"a prefix of {longest} characters; parameter names "
                                     f"are at most {MAX_NAME_CHARS}")
                resp.result = ListParametersResult()
                return resp
            return callback(req, resp)
        return capped

    def _on_get_parameters_request(self, req, resp):
        """rclpy's handler, bounded: at most MAX_NAMES names and MAX_REPLY_BYTES of reply.
        A refused request gets an empty reply, as rclpy gives for an unknown name."""
        names = req.names
        if len(names) > MAX_NAMES:
            self._refuse_request("get_parameters", f"{len(names)} names, at most {MAX_NAMES} per request")
            return resp
        twice = _named_twice(names)
        if twice is not None:
            # 50 x 'labels' (607 bytes) fetched 873 KB of reply, under the size cap (round 16)
            self._refuse_request("get_parameters", f"parameter {shown(twice)} named more than "
                                 "once; ask for each parameter once")
            return resp
        values, size = [], 0
        for name in names:
            try:
                value = self.get_parameter(name).get_parameter_value()
            except Exception:  # undeclared or without a value: rclpy's answer, an empty reply
                return resp
            size += _value_bytes(value)
            if size > MAX_REPLY_BYTES:
                self._refuse_request("get_parameters", f"the reply to {len(names)} names would exceed "
                                     f"{MAX_REPLY_BYTES >> 20} MB; ask for each parameter once")
                return resp
            values.append(value)
        resp.values = values
        return resp

    def _parameter_from_msg(self, msg) -> tuple[Parameter | None, SetParametersResult | None]:
        if not msg.name or not self.has_parameter(msg.name):
            # rclpy's own check let the empty name through (any() over the names is false
            # for ''), and the parameter then lived in the node: 64 x 1 MB under '' kept
            # +274 MB (probe round 6). Its refusal of other names listed nothing ("[]").
            reason = (f"parameter {shown(msg.name)}: not declared by this node "
                      "(`lgseg node --help` lists its parameters)")
            self._guard_warning("set_parameters", f"set_parameters refused: {reason}")
            return None, SetParametersResult(successful=False, reason=reason)
        reason = self._type_or_size_refusal(msg)
        if reason is not None:
            self._guard_warning("set_parameters", f"set_parameters refused: {reason}")
            return None, SetParametersResult(successful=False, reason=reason)
        try:
            return Parameter.from_parameter_msg(msg), None
        except (ValueError, TypeError) as e:
            reason = (f"parameter {shown(msg.name)}: unknown ParameterValue.type {msg.value.type}"
                      if msg.value.type not in _TYPE_NAMES else f"parameter {shown(msg.name)}: {e}")
            self._guard_warning("set_parameters", f"set_parameters refused: {reason}")
            return None, SetParametersResult(successful=False, reason=reason)

    @staticmethod
    def _type_or_size_refusal(msg) -> str | None:
        """A value of another type than the parameter's, or an array longer than any
        parameter takes, refused by its type and length alone. rclpy's conversion, which
        would otherwise come first, checks a 32 MB byte[] element by element: 1.3 s of the
        executor with the GIL held and +288 MB, for a value refused in the end (round 14)."""
        spec = P.PARAM_BY_NAME.get(msg.name)
        t = msg.value.type
        field = _VALUE_FIELDS.get(t)
        if spec is None or field is None:
            return None   # NOT_SET and unknown types: rclpy's conversion and its refusal
        value = getattr(msg.value, field)
        if t != P.PARAM_TYPE_IDS[spec.kind]:
            return (f"Wrong parameter type: {spec.name} takes {spec.kind}, got "
                    f"{_TYPE_NAMES[t]} {shown(value)}")
        if t in (5, 6, 7, 8, 9) and len(value) > MAX_ARRAY_ENTRIES:
            return (f"parameter {spec.name}: {len(value)} entries, at most {MAX_ARRAY_ENTRIES} "
                    "(no parameter of this node takes more)")
        return None

    def _set_one(self, params: list[Parameter], cameras=None) -> SetParametersResult:
        try:
            with self._cameras_in_request(cameras):
                return self.set_parameters_atomically(params)
        except Exception as e:  # ParameterNotDeclaredException and anything rclpy adds
            return SetParametersResult(successful=False, reason=shown(str(e), 300))

    def _request_cameras(self, params) -> list | None:
        """The `cameras` value a non-atomic request sets (Parameters, or Parameter messages
        from the service), or None where it sets none the node would accept. rclpy sets such
        a request's entries one at a time: `labels` given before `cameras` was checked, when
        stored while unconfigured, against the cameras the request replaces, and refused
        where the cameras-first order of the same request was accepted (audit round 21)."""
        for p in reversed(params):   # the last one the node accepts is the one that stays
            if p.name != "cameras":
                continue
            try:
                if not isinstance(p, Parameter):   # a message: quietly, the entry itself is
                    if self._type_or_size_refusal(p) is not None:   # refused where it is set
                        continue
                    p = Parameter.from_parameter_msg(p)
                if p.type_ != Parameter.Type.STRING_ARRAY:
                    continue
                self._check_value("cameras", p.value)
            except Exception:   # refused when its own entry is set: it sets nothing
                continue
            return list(p.value)
        return None

    @contextmanager
    def _cameras_in_request(self, cameras):
        """Within: the node's parameter callback checks a stored label set's mask topics
        against ``cameras`` (when not None), as for an atomic request that sets both."""
        scope = getattr(self, "_request_scope", None)
        if scope is None:   # before _guard_parameter_services (node start-up)
            yield
            return
        before = getattr(scope, "cameras", None)
        scope.cameras = cameras
        try:
            yield
        finally:
            scope.cameras = before

    def _scoped_request_cameras(self):
        """The `cameras` of the non-atomic request being set, or None."""
        return getattr(getattr(self, "_request_scope", None), "cameras", None)

    def set_parameters(self, parameter_list):
        """rclpy's non-atomic set, in process: as the service, a `labels` entry is checked
        against the `cameras` the same call sets, whichever comes first."""
        parameter_list = list(parameter_list)   # rclpy takes any iterable; this reads it twice
        # rclpy stops at the first undeclared name, so a `cameras` after it is never set: the
        # cameras in force are the ones to check against then.
        undeclared = any(not self.has_parameter(p.name) for p in parameter_list)
        cameras = None if undeclared else self._request_cameras(parameter_list)
        with self._cameras_in_request(cameras):
            return super().set_parameters(parameter_list)

    def _request_refusal(self, service: str, msgs) -> str | None:
        """Why a whole set request is refused before any entry is looked at, or None."""
        if len(msgs) > MAX_SET_ENTRIES:
            return f"{len(msgs)} parameters in one request, at most {MAX_SET_ENTRIES}"
        n_labels = sum(1 for m in msgs if m.name == "labels")
        if n_labels > 1:
            return f"labels given {n_labels} times in one request; give it once"
        return None

    async def _prepare_labels_entry(self, param: Parameter, held: list) -> SetParametersResult | None:
        """Encode a `labels` value on the label worker; None when it may be set, else the
        refusal. The set call that follows finds the encoded set and only swaps it in; the
        class topics it reserved go into ``held``, for release_class_tokens after that."""
        if param.name != "labels" or param.type_ != Parameter.Type.STRING_ARRAY:
            return None
        try:
            held.append(await self._prepare_labels_off_executor(param.value))
        except LabelSetError as e:
            return SetParametersResult(successful=False, reason=str(e))
        except Exception as e:  # encoder failure: keep the old set, say why
            return SetParametersResult(successful=False,
                                       reason=f"label encoding failed: {shown(str(e), 300)}")
        return None

    def _release_held(self, held: list) -> None:
        prepared = self._prepared
        for reservation in held:
            if prepared is not None and prepared[2] is reservation:
                # Encoded but never swapped in (another value of the request was refused):
                # dropped, not left holding the set and its segmenter (probe round 14).
                self._prepared = prepared = None
            self.release_class_tokens(reservation)
        held.clear()

    async def _on_set_parameters_request(self, req, resp):
        why = self._request_refusal("set_parameters", req.parameters)
        if why is not None:
            # One result, not one per entry: 200,000 refusals would cost the executor
            # seconds to build and the client megabytes to read.
            self._refuse_request("set_parameters", why)
            resp.results = [SetParametersResult(successful=False, reason=f"request refused: {why}")]
            return resp
        held: list = []
        cameras = self._request_cameras(req.parameters)
        try:
            for msg in req.parameters:
                param, refused = self._parameter_from_msg(msg)
                if refused is None:
                    refused = await self._prepare_labels_entry(param, held)
                resp.results.append(refused or self._set_one([param], cameras))
                self._release_held(held)
        finally:
            self._release_held(held)
        await self._drain_retiring()
        return resp

    async def _on_set_parameters_atomically_request(self, req, resp):
        why = self._request_refusal("set_parameters_atomically", req.parameters)
        if why is not None:
            self._refuse_request("set_parameters_atomically", why)
            resp.result = SetParametersResult(successful=False, reason=f"request refused: {why}")
            return resp
        params = []
        for msg in req.parameters:
            param, refused = self._parameter_from_msg(msg)
            if refused is not None:
                resp.result = refused
                return resp
            params.append(param)
        held: list = []
        try:
            for param in params:
                refused = await self._prepare_labels_entry(param, held)
                if refused is not None:
                    resp.result = refused
                    return resp
            resp.result = self._set_one(params)
        finally:
            self._release_held(held)
        await self._drain_retiring()
        return resp
