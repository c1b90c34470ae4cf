// The chat webview: renders the conversation with markdown-it (raw HTML off, so model output cannot inject
// markup) and highlight.js, streams answers as they arrive, and offers Copy / Insert / Apply on code blocks.
import hljs from 'highlight.js/lib/common';
import MarkdownIt from 'markdown-it';

import type { ChatMessage } from '../../sidecar/src/protocol';
import type { FromWebview, ToWebview } from '../src/chat/messages';

interface VsCodeApi {
  postMessage(message: FromWebview): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

const vscode = acquireVsCodeApi();

const md = new MarkdownIt({
  html: false,
  linkify: true,
  breaks: false,
  highlight: (code: string, lang: string): string => {
    try {
      if (lang && hljs.getLanguage(lang)) return hljs.highlight(code, { language: lang, ignoreIllegals: true }).value;
      return hljs.highlightAuto(code).value;
    } catch {
      return '';
    }
  },
});

const messagesEl = document.getElementById('messages') as HTMLDivElement;
const contextEl = document.getElementById('context') as HTMLDivElement;
const form = document.getElementById('ask') as HTMLFormElement;
const question = document.getElementById('question') as HTMLTextAreaElement;
const useSelection = document.getElementById('useSelection') as HTMLInputElement;
const stopButton = document.getElementById('stop') as HTMLButtonElement;
const sendButton = document.getElementById('send') as HTMLButtonElement;

/** The answer being streamed: its element and text so far. */
let streaming: { requestId: string; el: HTMLDivElement; text: string; frame: number | null; deltas: number } | null = null;

function renderInto(el: HTMLElement, markdown: string): void {
  el.innerHTML = md.render(markdown);
  for (const pre of Array.from(el.querySelectorAll('pre'))) addCodeActions(pre);
}

/** Buttons waiting for the extension's answer (Copied, Inserted into x.ts, …), by action id. */
const pendingActions = new Map<number, { button: HTMLButtonElement; label: string }>();
let nextActionId = 1;

function addCodeActions(pre: HTMLPreElement): void {
  const code = pre.querySelector('code')?.textContent ?? pre.textContent ?? '';
  const bar = document.createElement('div');
  bar.className = 'code-actions';
  for (const [label, type, title] of [
    ['Copy', 'copy', 'Copy this code to the clipboard'],
    ['Insert at Cursor', 'insert', 'Insert this code at the cursor of the editor (replacing its selection)'],
    ['Apply', 'apply', 'Preview this code as an edit: search/replace blocks change the files they name, other code replaces the selection'],
  ] as const) {
    const b = document.createElement('button');
    b.textContent = label;
    b.title = title;
    b.dataset.action = type;
    b.addEventListener('click', () => {
      const actionId = nextActionId++;
      pendingActions.set(actionId, { button: b, label });
      b.disabled = true;
      vscode.postMessage({ type, code, actionId });
    });
    bar.appendChild(b);
  }
  pre.parentElement?.insertBefore(bar, pre);
}

function addTurn(role: ChatMessage['role'], content: string, context: readonly string[] = []): HTMLDivElement {
  const turn = document.createElement('div');
  turn.className = `turn ${role}`;
  const body = document.createElement('div');
  body.className = 'body';
  if (role === 'user') body.textContent = content;
  else renderInto(body, content);
  turn.appendChild(body);
  if (context.length > 0) {
    // what went along with the question: the selection and the @files, as the model gets them
    const line = document.createElement('div');
    line.className = 'turn-context';
    line.textContent = `with ${context.join(', ')}`;
    turn.appendChild(line);
  }
  messagesEl.appendChild(turn);
  turn.scrollIntoView({ block: 'end' });
  return body;
}

function setBusy(busy: boolean): void {
  stopButton.hidden = !busy;
  sendButton.disabled = busy;
}

form.addEventListener('submit', (e) => {
  e.preventDefault();
  const text = question.value.trim();
  if (text === '') return;
  vscode.postMessage({ type: 'ask', text, useSelection: useSelection.checked });
  question.value = '';
});
question.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey) {
    e.preventDefault();
    form.requestSubmit();
  }
});
stopButton.addEventListener('click', () => vscode.postMessage({ type: 'stop' }));

window.addEventListener('message', (event: MessageEvent<ToWebview>) => {
  const m = event.data;
  switch (m.type) {
    case 'history':
      messagesEl.textContent = '';
      for (const msg of m.messages) if (msg.role !== 'system') addTurn(msg.role, msg.content);
      break;
    case 'context':
      contextEl.textContent = m.text;
      break;
    case 'start': {
      addTurn('user', m.question, m.context);
      const el = addTurn('assistant', '');
      el.classList.add('streaming');
      el.setAttribute('aria-busy', 'true');
      streaming = { requestId: m.requestId, el, text: '', frame: null, deltas: 0 };
      setBusy(true);
      break;
    }
    case 'delta': {
      const s = streaming;
      if (s === null || s.requestId !== m.requestId) break;
      s.text += m.text;
      // how many pieces arrived: shows (to users inspecting, and to the e2e test) that the answer streamed
      s.el.dataset.deltas = String(++s.deltas);
      // Re-render at most once per frame: markdown of a long answer is not free.
      if (s.frame === null) {
        s.frame = requestAnimationFrame(() => {
          s.frame = null;
          renderInto(s.el, s.text);
          s.el.scrollIntoView({ block: 'end' });
        });
      }
      break;
    }
    case 'done': {
      const s = streaming;
      if (s !== null && s.requestId === m.requestId) {
        if (s.frame !== null) cancelAnimationFrame(s.frame);
        renderInto(s.el, m.text ?? s.text);
        s.el.classList.remove('streaming');
        s.el.removeAttribute('aria-busy');
        if (m.finishReason === 'cancelled') {
          const note = document.createElement('div');
          note.className = 'note';
          note.textContent = 'Stopped.';
          s.el.appendChild(note);
        }
        s.el.dataset.finish = m.finishReason;
        streaming = null;
      }
      setBusy(false);
      break;
    }
    case 'error': {
      const el = document.createElement('div');
      el.className = 'error';
      el.textContent = m.message;
      messagesEl.appendChild(el);
      if (streaming !== null) {
        streaming.el.classList.remove('streaming');
        streaming = null;
      }
      setBusy(false);
      break;
    }
    case 'actionDone': {
      const pending = pendingActions.get(m.actionId);
      if (!pending) break;
      pendingActions.delete(m.actionId);
      const { button, label } = pending;
      button.disabled = false;
      button.textContent = m.label;
      button.classList.toggle('done', m.ok);
      button.classList.toggle('failed', !m.ok);
      setTimeout(() => {
        button.textContent = label;
        button.classList.remove('done', 'failed');
      }, 2500);
      break;
    }
    case 'notice': {
      const el = document.createElement('div');
      el.className = 'note';
      el.textContent = m.message;
      messagesEl.appendChild(el);
      break;
    }
  }
});

vscode.postMessage({ type: 'ready' });
