"""The compact student that runs on the device (see :mod:`student.model`)."""

from .model import (
                    DEFAULT_STUDENT,
                    StudentConfig,
                    StudentIQA,
                    StudentLoadError,
                    StudentOutput,
                    create_student,
                    list_students,
                    read_student_config,
                    student_config,
)

__all__ = ["DEFAULT_STUDENT", "StudentConfig", "StudentIQA", "StudentLoadError", "StudentOutput",
           "create_student", "list_students", "read_student_config", "student_config"]
