"""A stand-in for ``bpy.types.UILayout`` so panels can be drawn in background Blender, which has no window.

Background Blender never creates a region, so a real ``UILayout`` cannot be had there. This recorder
runs the panels' real ``draw`` code and checks every call against Blender's RNA as the real layout
would: the property exists on the data, the operator is registered and its properties exist, the
icon is a valid icon name, ``template_list`` names a registered UIList (whose ``draw_item`` is run
for every row). It records the text shown so tests can assert what the artist would read.
"""

from __future__ import annotations

from types import SimpleNamespace

import bpy

ICONS = set(bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items.keys())


class OperatorProps:
    def __init__(self, idname: str, log: list):
        module, name = idname.split(".")
        self._rna = getattr(getattr(bpy.ops, module), name).get_rna_type()
        self._idname, self._log = idname, log

    def __setattr__(self, key, value):
        if not key.startswith("_"):
            assert key in self._rna.properties, f"{self._idname} has no property {key!r}"
            self._log.append(("operator_prop", self._idname, key, value))
        object.__setattr__(self, key, value)


class Layout:
    def __init__(self, log: list | None = None):
        self.__dict__["log"] = [] if log is None else log
        self.__dict__["attrs"] = {}

    def __setattr__(self, key, value):
        assert key in ("alert", "enabled", "active", "scale_x", "scale_y", "use_property_split",
                       "use_property_decorate", "alignment"), f"UILayout has no attribute {key!r}"
        self.attrs[key] = value

    def _icon(self, icon):
        assert icon in ICONS, f"unknown icon {icon!r}"

    def _child(self, **_):
        return type(self)(self.log)

    row = column = box = split = grid_flow = column_flow = _child

    def separator(self, **_):
        pass

    def label(self, *, text="", icon="NONE", **_):
        self._icon(icon)
        self.log.append(("label", text, icon))

    def prop(self, data, name, *, text=None, icon="NONE", **_):
        self._icon(icon)
        assert name in data.bl_rna.properties, f"{data!r} has no property {name!r}"
        self.log.append(("prop", name, text))

    def operator(self, idname, *, text=None, icon="NONE", **_):
        self._icon(icon)
        self.log.append(("operator", idname, text))
        return OperatorProps(idname, self.log)

    def progress(self, *, factor=0.0, type="BAR", text=""):
        assert 0.0 <= factor <= 1.0 and type in ("BAR", "RING")
        self.log.append(("progress", factor, text))

    def template_ID(self, data, name, *, new="", open="", **_):
        assert name in data.bl_rna.properties
        for op in (new, open):
            if op:
                OperatorProps(op, [])
        self.log.append(("template_ID", name))

    def template_icon(self, *, icon_value, scale=1.0):
        assert isinstance(icon_value, int)
        self.log.append(("template_icon", icon_value))

    def template_list(self, listtype_name, list_id, dataptr, propname, active_dataptr, active_propname, **_):
        ui_list = getattr(bpy.types, listtype_name)
        assert propname in dataptr.bl_rna.properties and active_propname in active_dataptr.bl_rna.properties
        for index, item in enumerate(getattr(dataptr, propname)):
            ui_list.draw_item(SimpleNamespace(), bpy.context, type(self)(self.log), dataptr, item, 0, active_dataptr,
                              active_propname, index)
        self.log.append(("template_list", listtype_name))

    def texts(self) -> list[str]:
        return [entry[1] if entry[0] == "label" else entry[2] for entry in self.log
                if entry[0] in ("label", "progress")]


def draw_panels() -> Layout:
    """Draw every Droplet panel (parents first) into one recorder, as the sidebar would."""
    layout = Layout()
    for name in ("DROPLET_PT_main", "DROPLET_PT_input", "DROPLET_PT_prompt", "DROPLET_PT_settings", "DROPLET_PT_jobs"):
        panel = getattr(bpy.types, name)
        assert panel.bl_category == "Droplet" and panel.bl_space_type == "VIEW_3D" and panel.bl_region_type == "UI"
        panel.draw(SimpleNamespace(layout=layout), bpy.context)
    return layout
