// Typed access to the `glance.*` settings.
import * as fs from 'node:fs';
import * as path from 'node:path';

import * as vscode from 'vscode';

export interface GlanceConfig {
  modelPath: string;
  device: 'auto' | 'cpu' | 'cuda';
  gpuMemoryGiB: number | null;
  remoteUrl: string;
  completionEnabled: boolean;
  completionLanguages: Record<string, boolean>;
  debounceMs: number | null;
  maxLines: number;
  contextBudgetTokens: number | null;
  maxFileBytes: number;
}

export function readConfig(): GlanceConfig {
  const c = vscode.workspace.getConfiguration('glance');
  return {
    modelPath: c.get<string>('model.path', '').trim(),
    device: c.get<'auto' | 'cpu' | 'cuda'>('device', 'auto'),
    gpuMemoryGiB: c.get<number | null>('gpuMemoryGiB', null),
    remoteUrl: c.get<string>('remote.url', '').trim(),
    completionEnabled: c.get<boolean>('completion.enabled', true),
    completionLanguages: c.get<Record<string, boolean>>('completion.languages', { '*': true }),
    debounceMs: c.get<number | null>('completion.debounceMs', null),
    maxLines: c.get<number>('completion.maxLines', 8),
    contextBudgetTokens: c.get<number | null>('context.budgetTokens', null),
    maxFileBytes: c.get<number>('context.maxFileKiB', 512) * 1024,
  };
}

/** Whether completions are on for a language: its own switch, else the `*` switch, else on. */
export function completionEnabledFor(config: GlanceConfig, languageId: string): boolean {
  if (!config.completionEnabled) return false;
  const own = config.completionLanguages[languageId];
  if (typeof own === 'boolean') return own;
  const star = config.completionLanguages['*'];
  return typeof star === 'boolean' ? star : true;
}

/**
 * The model directory: the setting, or the embedded model. A packaged extension carries it in
 * <extension>/models/glance-tiny; a source checkout has it at the repository root.
 */
export function resolveModelDir(config: GlanceConfig, extensionPath: string): string {
  if (config.modelPath !== '') return path.resolve(config.modelPath);
  const packaged = path.join(extensionPath, 'models', 'glance-tiny');
  if (fs.existsSync(path.join(packaged, 'config.json'))) return packaged;
  return path.resolve(extensionPath, '..', 'models', 'glance-tiny');
}
