"""Drop-in replacements for the APIs of other face libraries, on facetrust's engines.

:mod:`facetrust.compat.face_recognition` is face_recognition 1.3.0's API:
``import facetrust.compat.face_recognition as face_recognition`` and code
written for face_recognition keeps working, with the same results, faster
and without compiling dlib. See ``docs/compat.md`` for the migration guide.
"""
